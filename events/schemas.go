package events

import (
	"embed"
	"fmt"
	"io/fs"
)

// schemaFiles holds one JSON Schema (draft 2020-12) per event type, named
// <type>.json, describing the record value (the CloudEvents data).
//
//go:embed schemas/*.json
var schemaFiles embed.FS

// Schemas returns the JSON Schemas of every event type, one file per type named
// <type>.json, for serving or copying to a schema registry.
func Schemas() fs.FS {
	sub, err := fs.Sub(schemaFiles, "schemas")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

// Schema returns the JSON Schema of the data of eventType, or an error when
// CHOM has no such type.
func Schema(eventType string) ([]byte, error) {
	b, err := fs.ReadFile(Schemas(), eventType+".json")
	if err != nil {
		return nil, fmt.Errorf("schema of event type %q: %w", eventType, err)
	}
	return b, nil
}
