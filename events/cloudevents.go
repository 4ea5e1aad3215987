package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chomhq/chom/models"
)

// CloudEvents 1.0 Kafka protocol binding, binary content mode: the context
// attributes travel as record headers named ce_<attribute>, the data is the record
// value, and its media type is the content-type header.
const (
	HeaderID          = "ce_id"
	HeaderSource      = "ce_source"
	HeaderType        = "ce_type"
	HeaderSpecVersion = "ce_specversion"
	HeaderTime        = "ce_time"
	HeaderSubject     = "ce_subject"
	// HeaderPartitionKey is the CloudEvents partitioning extension: the tenant ID,
	// equal to the record key.
	HeaderPartitionKey = "ce_partitionkey"
	HeaderContentType  = "content-type"

	// SpecVersion is the CloudEvents version of every event.
	SpecVersion = "1.0"
	// ContentTypeJSON is the media type of every event's data.
	ContentTypeJSON = "application/json"
)

// Envelope is one event as a consumer reads it from a record: the CloudEvents
// context attributes and the JSON data.
type Envelope struct {
	ID          string
	Source      string
	Type        string
	SpecVersion string
	Time        time.Time
	Subject     string
	// TenantID is the record key (and the ce_partitionkey header).
	TenantID string
	Data     json.RawMessage
}

// Message returns the Kafka record of an outbox row for the topic prefix: keyed by
// tenant ID, CloudEvents headers, the JSON data as value. The record's topic is
// FullTopic(prefix, row.Topic).
func Message(prefix string, row models.OutboxEvent) kafka.Message {
	return kafka.Message{
		Topic: FullTopic(prefix, row.Topic),
		Key:   []byte(row.TenantID),
		Value: []byte(row.Data),
		Headers: []kafka.Header{
			{Key: HeaderID, Value: []byte(row.EventID)},
			{Key: HeaderSource, Value: []byte(row.Source)},
			{Key: HeaderType, Value: []byte(row.Type)},
			{Key: HeaderSpecVersion, Value: []byte(SpecVersion)},
			{Key: HeaderTime, Value: []byte(row.OccurredAt.UTC().Format(time.RFC3339Nano))},
			{Key: HeaderSubject, Value: []byte(row.Subject)},
			{Key: HeaderPartitionKey, Value: []byte(row.TenantID)},
			{Key: HeaderContentType, Value: []byte(ContentTypeJSON)},
		},
	}
}

// ErrMalformed marks a record that is not a valid CHOM CloudEvent: a consumer
// sends it to a dead-letter topic instead of retrying it.
var ErrMalformed = errors.New("malformed event")

// Parse reads the CloudEvent of a record in binary content mode. It fails with
// an error wrapping ErrMalformed when a required attribute is missing or wrong,
// the key differs from the partition key, or the value is not a JSON object.
// It does not look inside the data: see [DecodeUsage] and [DecodeSite].
func Parse(m kafka.Message) (Envelope, error) {
	h := make(map[string]string, len(m.Headers))
	for _, x := range m.Headers {
		if _, dup := h[x.Key]; dup {
			return Envelope{}, fmt.Errorf("%w: header %s repeated", ErrMalformed, x.Key)
		}
		h[x.Key] = string(x.Value)
	}
	e := Envelope{
		ID: h[HeaderID], Source: h[HeaderSource], Type: h[HeaderType],
		SpecVersion: h[HeaderSpecVersion], Subject: h[HeaderSubject], TenantID: string(m.Key),
	}
	var errs []error
	for name, v := range map[string]string{HeaderID: e.ID, HeaderSource: e.Source, HeaderType: e.Type} {
		if v == "" {
			errs = append(errs, fmt.Errorf("header %s is missing", name))
		}
	}
	if e.SpecVersion != SpecVersion {
		errs = append(errs, fmt.Errorf("header %s is %q, want %q", HeaderSpecVersion, e.SpecVersion, SpecVersion))
	}
	if ct := h[HeaderContentType]; ct != ContentTypeJSON {
		errs = append(errs, fmt.Errorf("header %s is %q, want %q", HeaderContentType, ct, ContentTypeJSON))
	}
	if t, err := time.Parse(time.RFC3339Nano, h[HeaderTime]); err != nil {
		errs = append(errs, fmt.Errorf("header %s is not an RFC 3339 time: %q", HeaderTime, h[HeaderTime]))
	} else {
		e.Time = t
	}
	if e.TenantID == "" {
		errs = append(errs, errors.New("record key (tenant ID) is empty"))
	}
	if pk, ok := h[HeaderPartitionKey]; ok && pk != e.TenantID {
		errs = append(errs, fmt.Errorf("header %s %q differs from the record key %q", HeaderPartitionKey, pk, e.TenantID))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(m.Value, &obj); err != nil {
		errs = append(errs, fmt.Errorf("value is not a JSON object: %v", err))
	}
	if err := errors.Join(errs...); err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	e.Data = json.RawMessage(m.Value)
	return e, nil
}

// DecodeUsage returns the usage event of a usage.recorded.v1 envelope. It fails
// with ErrMalformed when the data has unknown or missing fields, does not
// validate, belongs to another tenant than the key, or its ID is not the one the
// usage's tenant, metric, site (if any) and period give (so deduplication on ID
// is sound).
func DecodeUsage(e Envelope) (UsageEvent, error) {
	var u UsageEvent
	if e.Type != TypeUsageRecorded {
		return u, fmt.Errorf("%w: type %q is not %s", ErrMalformed, e.Type, TypeUsageRecorded)
	}
	if err := decodeStrict(e.Data, &u); err != nil {
		return u, fmt.Errorf("%w: %s data: %v", ErrMalformed, e.Type, err)
	}
	if err := u.Validate(); err != nil {
		return u, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if u.TenantID != e.TenantID {
		return u, fmt.Errorf("%w: data tenant_id %q differs from the record key %q", ErrMalformed, u.TenantID, e.TenantID)
	}
	if want := UsageRecordID(u.TenantID, u.Metric, u.SiteID, u.PeriodStart); e.ID != want {
		return u, fmt.Errorf("%w: id %q is not the stable ID %q of this usage", ErrMalformed, e.ID, want)
	}
	return u, nil
}

// DecodeSite returns the site event of a site.*.v1 envelope, failing with
// ErrMalformed like [DecodeUsage].
func DecodeSite(e Envelope) (SiteEvent, error) {
	var s SiteEvent
	switch e.Type {
	case TypeSiteProvisioned, TypeSiteProvisionFailed, TypeSiteDeleted:
	default:
		return s, fmt.Errorf("%w: type %q is not a site event", ErrMalformed, e.Type)
	}
	if err := decodeStrict(e.Data, &s); err != nil {
		return s, fmt.Errorf("%w: %s data: %v", ErrMalformed, e.Type, err)
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if s.TenantID != e.TenantID {
		return s, fmt.Errorf("%w: data tenant_id %q differs from the record key %q", ErrMalformed, s.TenantID, e.TenantID)
	}
	return s, nil
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and
// trailing data: a v1 type never gains fields, so an unknown one is a bug.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
