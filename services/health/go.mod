module github.com/stickpoint/stickpoint/services/health

go 1.26.0

require (
	github.com/stickpoint/stickpoint/pkg v0.0.0
	go.yaml.in/yaml/v3 v3.0.5
)

replace (
	github.com/stickpoint/stickpoint/pkg => ../../pkg
	github.com/stickpoint/stickpoint/proto => ../../proto
)

replace github.com/stickpoint/stickpoint/services/ingest => ../ingest

replace github.com/stickpoint/stickpoint/services/milestones => ../milestones

replace github.com/stickpoint/stickpoint/pkg/sdk => ../../pkg/sdk
