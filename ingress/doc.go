// Package ingress is CHOM's thin HTTP API (Gin): it authenticates a request,
// validates it, records the operation, enqueues its task and answers 202 with the
// operation. It also serves operation polling (ETag, long poll), listings, health
// endpoints and, behind the admin credential, the asynq web UI.
//
// Tenancy comes from the API token only: every query is scoped by the token's
// tenant, and another tenant's resource is a 404.
package ingress
