// Package models keeps each tenant's health model, versioned and durable,
// in the JetStream key-value bucket health_models (see pkg/specstore).
package models

import (
	"context"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/specstore"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
)

// Bucket is the key-value bucket of models.
const Bucket = "health_models"

// Stored is a model as put, with its version; version 0 is the default.
type Stored = specstore.Stored[model.Model]

// Store reads and writes models.
type Store = specstore.Store[model.Model]

// Open opens (or creates) the bucket.
func Open(ctx context.Context, bus *natsjs.Bus) (*Store, error) {
	return specstore.Open(ctx, bus, specstore.Kind[model.Model]{
		Bucket: Bucket, What: "health model",
		Description: "Stickpoint health models: each tenant's scoring model, as put, with its last versions.",
		Parse:       model.Parse, Template: model.Template, Default: model.Default(),
	})
}
