// Package billing is CHOM's reference billing consumer: what a billing team runs,
// or copies into its own language, to turn the usage events on Kafka into invoice
// lines exactly once.
//
// It shows the three rules every consumer of CHOM's topics follows: deduplicate
// on the event's source and ID in the same transaction as the event's effect;
// commit Kafka offsets only after that transaction; and send a record that cannot
// be parsed or validated to a dead-letter topic instead of stopping on it.
package billing
