package input

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// MaxBodyBytes is the largest request body the API accepts. A body of exactly
// MaxBodyBytes bytes is decoded; one byte more is a 413.
const MaxBodyBytes = 64 << 10

// DecodeJSON decodes the JSON object in r's body into dst, which must be a
// non-nil pointer (normally to a request struct of this package).
//
// It rejects, with a *DecodeError carrying the HTTP status, a Content-Type that
// is not JSON (415), a Content-Length above MaxBodyBytes (413, before reading
// anything), and everything DecodeJSONReader rejects. It does not close the
// body; the HTTP server does.
func DecodeJSON(r *http.Request, dst any) error {
	return DecodeJSONLimit(r, MaxBodyBytes, dst)
}

// DecodeJSONLimit is DecodeJSON for a route whose bodies may be larger (or
// must be smaller) than MaxBodyBytes: a body over limit bytes is the 413,
// before anything is read when Content-Length says so.
func DecodeJSONLimit(r *http.Request, limit int64, dst any) error {
	ct := r.Header.Get("Content-Type")
	if err := checkContentType(ct); err != nil {
		return err
	}
	if r.ContentLength > limit {
		return tooLarge(nil, limit)
	}
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	return decodeReader(body, ct, limit, dst)
}

// DecodeJSONReader decodes one JSON object read from body into dst, which must
// be a non-nil pointer. contentType is the request's Content-Type header.
//
// It reads at most MaxBodyBytes+1 bytes whatever Content-Length claims, so it
// is safe on bodies of unknown length. Every rejection is a *DecodeError:
//
//   - 415 when contentType is not application/json or application/*+json, or
//     names a charset other than UTF-8;
//   - 413 when the body is longer than MaxBodyBytes (or body is an
//     http.MaxBytesReader that tripped);
//   - 400 when the body is empty, is not valid JSON (Detail gives the byte
//     offset), is a JSON value other than an object, or has data after the
//     object;
//   - 422 when members are unknown, given twice, or of the wrong JSON type;
//     Fields names every one of them. dst is still filled with the other
//     members, so that the caller can validate them and report everything
//     at once: Join(DecodeJSON(r, &req), req.Normalize()...).
//
// Member names must match the struct's json tags exactly: unlike plain
// encoding/json, "Domain" does not fill the field tagged "domain". Any other
// error (dst not a pointer) is a programming error and is returned as is.
func DecodeJSONReader(body io.Reader, contentType string, dst any) error {
	return decodeReader(body, contentType, MaxBodyBytes, dst)
}

// decodeReader is DecodeJSONReader with a body limit of limit bytes.
func decodeReader(body io.Reader, contentType string, limit int64, dst any) error {
	if err := checkContentType(contentType); err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return tooLarge(err, limit)
		}
		return &DecodeError{Status: http.StatusBadRequest, Detail: "request body could not be read", err: err}
	}
	if int64(len(data)) > limit {
		return tooLarge(nil, limit)
	}
	return decodeBytes(data, dst)
}

func tooLarge(cause error, limit int64) *DecodeError {
	return &DecodeError{
		Status: http.StatusRequestEntityTooLarge,
		Detail: fmt.Sprintf("request body must be at most %d bytes", limit),
		err:    cause,
	}
}

// checkContentType accepts application/json and the structured-syntax suffix
// form application/<anything>+json (RFC 6839), with any parameters as long as
// a charset, if given, is UTF-8 (the only encoding RFC 8259 allows).
func checkContentType(ct string) error {
	const want = "Content-Type must be application/json"
	if ct == "" {
		return &DecodeError{Status: http.StatusUnsupportedMediaType, Detail: want}
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return &DecodeError{Status: http.StatusUnsupportedMediaType, Detail: want, err: err}
	}
	sub, ok := strings.CutPrefix(mt, "application/")
	if !ok || (sub != "json" && (len(sub) <= len("+json") || !strings.HasSuffix(sub, "+json"))) {
		return &DecodeError{Status: http.StatusUnsupportedMediaType, Detail: want}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return &DecodeError{Status: http.StatusUnsupportedMediaType, Detail: "charset must be utf-8"}
	}
	return nil
}

// decodeBytes does the work once the whole body is in memory. It scans the
// top-level object first, so that syntax errors win over field errors and
// member names are checked exactly, then lets encoding/json fill dst with the
// members that are known, given once and of the right JSON type. Every other
// member is named in one 422 *DecodeError.
func decodeBytes(data []byte, dst any) error {
	i := skipSpace(data)
	if i == len(data) {
		return &DecodeError{Status: http.StatusBadRequest, Detail: "request body must not be empty"}
	}
	if data[i] != '{' {
		return &DecodeError{Status: http.StatusBadRequest, Detail: "request body must be a JSON object"}
	}
	members, err := scanObject(data)
	if err != nil {
		return err
	}
	fields := knownFields(dst)
	problems, good := memberProblems(members, fields)
	if fields == nil {
		// Not a struct: no names to check, no per-member types to try;
		// encoding/json decides, after the duplicate check.
		if len(problems) > 0 {
			return fieldsError(problems)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(dst); err != nil {
			return classify(err)
		}
		return nil
	}

	if len(problems) == 0 {
		// The common case: every member is known and given once, so the
		// body itself is the object to decode.
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		err = dec.Decode(dst)
	} else {
		err = decodeMembers(good, dst)
	}
	if _, mistyped := errors.AsType[*json.UnmarshalTypeError](err); mistyped {
		// encoding/json reports only the first mistyped member: try each
		// member alone to name them all, then decode the well-typed ones.
		reflect.ValueOf(dst).Elem().SetZero()
		var typed []member
		typed, problems, err = typeCheck(good, problems, reflect.TypeOf(dst).Elem())
		if err == nil {
			err = decodeMembers(typed, dst)
		}
	}
	if err != nil {
		return classify(err)
	}
	if len(problems) > 0 {
		return fieldsError(problems)
	}
	return nil
}

// member is one name/value pair of the top-level object, in body order.
type member struct {
	key   string // unescaped
	value json.RawMessage
	at    int // position among the members, to report problems in body order
}

// memberProblem is a FieldError with the position of its member in the body.
type memberProblem struct {
	FieldError
	at int
}

// memberProblems names each member that is unknown (when fields is non-nil)
// or given more than once (each name once, at its first occurrence), and
// returns the members that are neither.
func memberProblems(members []member, fields map[string]struct{}) ([]memberProblem, []member) {
	count := make(map[string]int, len(members))
	for _, m := range members {
		count[m.key]++
	}
	var (
		problems []memberProblem
		good     []member
		named    = make(map[string]struct{})
	)
	for _, m := range members {
		_, known := fields[m.key]
		switch {
		case fields != nil && !known:
			if _, done := named[m.key]; !done {
				problems = append(problems, memberProblem{FieldError{Field: m.key, Detail: "is not a known field"}, m.at})
			}
		case count[m.key] > 1:
			if _, done := named[m.key]; !done {
				problems = append(problems, memberProblem{FieldError{Field: m.key, Detail: "is given more than once"}, m.at})
			}
		default:
			good = append(good, m)
			continue
		}
		named[m.key] = struct{}{}
	}
	return problems, good
}

// typeCheck decodes each member alone into a scratch value of type t and
// returns the members that decoded, with problems extended by those of the
// wrong JSON type (in body order). Any other decoding error (from a field's
// own UnmarshalJSON) is returned.
func typeCheck(members []member, problems []memberProblem, t reflect.Type) ([]member, []memberProblem, error) {
	scratch := reflect.New(t).Interface()
	var typed []member
	for _, m := range members {
		err := decodeMembers([]member{m}, scratch)
		if err == nil {
			typed = append(typed, m)
			continue
		}
		typ, ok := errors.AsType[*json.UnmarshalTypeError](err)
		if !ok {
			return nil, nil, err
		}
		field := typ.Field
		if field == "" {
			field = m.key
		}
		problems = append(problems, memberProblem{FieldError{Field: field, Detail: typeDetail(typ.Type)}, m.at})
	}
	slices.SortStableFunc(problems, func(a, b memberProblem) int { return cmp.Compare(a.at, b.at) })
	return typed, problems, nil
}

// decodeMembers decodes the object made of members into dst, refusing
// unknown names (memberProblems already removed them; this is a guard).
func decodeMembers(members []member, dst any) error {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		key, err := json.Marshal(m.key)
		if err != nil {
			return fmt.Errorf("encode member name: %w", err)
		}
		b.Write(key)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	dec := json.NewDecoder(&b)
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}

// fieldsError is the 422 naming every problem; Field and Detail repeat the
// first one.
func fieldsError(problems []memberProblem) *DecodeError {
	fields := make([]FieldError, len(problems))
	for i, p := range problems {
		fields[i] = p.FieldError
	}
	return &DecodeError{Status: http.StatusUnprocessableEntity, Field: fields[0].Field, Detail: fields[0].Detail, Fields: fields}
}

// skipSpace returns the index of the first byte of data that is not JSON
// whitespace (RFC 8259 §2), or len(data).
func skipSpace(data []byte) int {
	for i, c := range data {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return i
		}
	}
	return len(data)
}

// scanObject walks the top-level object of data token by token and returns
// its members in order. It reports malformed JSON and data after the object
// (400); names are checked by the caller.
func scanObject(data []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '{', checked by the caller
		return nil, classify(err)
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, classify(err)
		}
		key, _ := tok.(string) // Token only yields strings in key position
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, classify(err)
		}
		members = append(members, member{key: key, value: value, at: len(members)})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, classify(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, &DecodeError{
				Status: http.StatusBadRequest,
				Detail: fmt.Sprintf("request body must contain a single JSON object; unexpected data at byte offset %d", se.Offset),
				err:    err,
			}
		}
		return nil, &DecodeError{Status: http.StatusBadRequest, Detail: "request body must contain a single JSON object", err: err}
	}
	return members, nil
}

// classify turns an encoding/json error into a *DecodeError. Errors that are
// not about the input (an invalid dst) are returned unchanged.
func classify(err error) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		inv    *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &syntax):
		return &DecodeError{
			Status: http.StatusBadRequest,
			Detail: fmt.Sprintf("malformed JSON at byte offset %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: ")),
			err:    err,
		}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &DecodeError{Status: http.StatusBadRequest, Detail: "malformed JSON: unexpected end of input", err: err}
	case errors.As(err, &typ):
		if typ.Field == "" {
			return &DecodeError{Status: http.StatusBadRequest, Detail: "request body must be a JSON object", err: err}
		}
		return &DecodeError{Status: http.StatusUnprocessableEntity, Field: typ.Field, Detail: typeDetail(typ.Type), err: err}
	case errors.As(err, &inv):
		return err
	}
	if name, ok := unknownField(err.Error()); ok {
		return &DecodeError{Status: http.StatusUnprocessableEntity, Field: name, Detail: "is not a known field", err: err}
	}
	// Anything else comes from a field's own UnmarshalJSON; its text may
	// describe internals, so the client gets a generic sentence.
	return &DecodeError{Status: http.StatusBadRequest, Detail: "request body contains an invalid value", err: err}
}

// unknownField extracts x from encoding/json's `json: unknown field "x"`.
// encoding/json has no typed error for this case.
func unknownField(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "json: unknown field ")
	if !ok {
		return "", false
	}
	name, err := strconv.Unquote(rest)
	if err != nil {
		return "", false
	}
	return name, true
}

// typeDetail says which JSON type a Go type expects.
func typeDetail(t reflect.Type) string {
	if t == nil {
		return "has the wrong type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "must be a string"
	case reflect.Bool:
		return "must be a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "must be an integer"
	case reflect.Float32, reflect.Float64:
		return "must be a number"
	case reflect.Slice, reflect.Array:
		return "must be an array"
	case reflect.Map, reflect.Struct:
		return "must be an object"
	}
	return "has the wrong type"
}

var fieldCache sync.Map // reflect.Type -> map[string]struct{}

// knownFields returns the exact JSON member names that dst's struct type
// accepts, or nil when dst is not a pointer to a struct (then only
// encoding/json's own, case-insensitive, unknown-field check applies).
func knownFields(dst any) map[string]struct{} {
	t := reflect.TypeOf(dst)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	t = t.Elem()
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]struct{})
	}
	m := make(map[string]struct{})
	collectFields(t, m, 0)
	fieldCache.Store(t, m)
	return m
}

// collectFields follows encoding/json's naming rules closely enough for
// request structs: the tag name if any, else the Go name; "-" skips; untagged
// embedded structs are flattened. Name conflicts between embedded structs are
// not resolved (encoding/json drops such fields; we accept them and let
// encoding/json decide).
func collectFields(t reflect.Type, m map[string]struct{}, depth int) {
	if depth > 8 {
		return
	}
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectFields(ft, m, depth+1)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = struct{}{}
	}
}
