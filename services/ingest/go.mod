module github.com/stickpoint/stickpoint/services/ingest

go 1.26.0

require (
	github.com/go-json-experiment/json v1.27.2
	github.com/stickpoint/stickpoint/pkg v0.0.0
	github.com/stretchr/testify v1.12.1
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

replace (
	github.com/stickpoint/stickpoint/pkg => ../../pkg
	github.com/stickpoint/stickpoint/proto => ../../proto
)
