module github.com/stickpoint/stickpoint/services/milestones

go 1.26.0

require go.yaml.in/yaml/v3 v3.0.5

replace (
	github.com/stickpoint/stickpoint/pkg => ../../pkg
	github.com/stickpoint/stickpoint/proto => ../../proto
)
