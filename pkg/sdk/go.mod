module github.com/stickpoint/stickpoint/pkg/sdk

go 1.26.0
