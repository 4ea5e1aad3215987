// Package events defines the facts CHOM publishes for billing and other consumers,
// and carries them to Kafka.
//
// The contract: versioned event types (site.provisioned.v1, usage.recorded.v1, …)
// with their payloads, builders that turn each into an outbox row committed with
// the state change it describes, one JSON Schema per type (Schemas), versioned
// topics under a configurable prefix (FullTopic), and the CloudEvents 1.0 Kafka
// binding in binary mode (Message to write a record, Parse and DecodeUsage to read
// one back).
//
// Event IDs are stable: the same fact always yields the same ID (derived from the
// operation or usage period it describes), so a consumer deduplicates on
// source + id.
//
// # Terminal outcomes and their events
//
// Each operation's finishing transaction writes at most one event. The rule: an
// outcome has an event when it starts or ends something a consumer counts (a
// site that serves, an archive that is kept) or is a failure the platform owes
// the tenant an account of; an outcome that leaves everything as it was, or that
// the caller asked for before anything billable began, has none, and no earlier
// event ever announced what it ends (there is no "requested" event).
//
//	outcome                                     event
//	provision succeeded                         site.provisioned.v1
//	provision failed (permanent or last retry)  site.provision_failed.v1
//	provision cancelled (pending or running)    none: the site never became active (it is deleted, its domain free)
//	deprovision succeeded                       site.deleted.v1
//	deprovision failed or cancelled             none: the site stays as it was, still billed until deleted
//	backup created                              backup.completed.v1
//	backup failed (permanent or last retry)     backup.failed.v1
//	backup cancelled (pending or running)       none: no archive was kept, nothing was billable
//	restore succeeded                           backup.restored.v1
//	restore failed or cancelled                 none: the site and the backup are unchanged
//	backup deleted (by request or by prune)     backup.deleted.v1
//	backup delete failed or cancelled           none: the backup is kept as it was
//
// The Relay publishes the outbox at least once, in order per tenant; the
// reference consumer that bills usage exactly once is in events/billing.
package events
