package contract

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Reason codes: the same strings as the pipeline's (rag_pipeline/vocabulary.py, README
// "What happens to a page"). A rejected message gets one; the DLQ record and the failed
// status carry it. MissingField and InvalidField are followed by ":<field>".
const (
	EmptyMessage        = "empty_message"
	TooLarge            = "too_large"
	InvalidJSON         = "invalid_json"
	NotAnObject         = "not_an_object"
	MissingField        = "missing_field"
	InvalidField        = "invalid_field"
	InvalidCollectionID = "invalid_collection_id"
	InvalidAlias        = "invalid_alias"
	UnknownKind         = "unknown_kind"
	InvalidURL          = "invalid_url"
	UnsupportedEncoding = "unsupported_encoding"
	NotHTML             = "not_html"
	EmptyContent        = "empty_content"
	BadBase64           = "bad_base64"
	BadGzip             = "bad_gzip"
	maxInt64            = uint64(1<<63 - 1)
	maxURLLength        = 16 * 1024
	sniffWindow         = 64 * 1024
	defaultContentType  = "text/html"
	defaultEncoding     = "gzip+base64"
)

// Encodings of content.html the pipeline accepts.
var Encodings = []string{"gzip+base64", "base64", "identity"}

var (
	// CollectionIDPattern: a UUID, or the alternative form project_%d_request_%d, or any
	// 1-64 of A-Z a-z 0-9 _ - (it becomes a LightRAG workspace and part of SQL rows).
	CollectionIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	jobIDSniff          = regexp.MustCompile(`"job_id"[ \t\n\r\f\v]*:[ \t\n\r\f\v]*(\d{1,19})\b`)
	collectionSniff     = regexp.MustCompile(`"collection_id"[ \t\n\r\f\v]*:[ \t\n\r\f\v]*"([A-Za-z0-9_-]{1,64})"`)
	controlChars        = regexp.MustCompile(`[\x00-\x1f\x7f]`)
	integerLiteral      = regexp.MustCompile(`^-?[0-9]+$`)
	htmlTypes           = []string{"text/html", "application/xhtml+xml"}
	// The fields of the message in the order the pipeline checks them: the first problem
	// found is the one reported, on both sides.
	fieldOrder = []string{"kind", "job_id", "request_id", "project_id", "user_id",
		"collection_id", "alias", "url", "depth", "parent_url", "discovered_at", "content",
		"metadata"}
	required = map[string]bool{"job_id": true, "request_id": true, "project_id": true,
		"user_id": true, "collection_id": true, "url": true, "depth": true,
		"discovered_at": true, "content": true}
)

// Limits of one message: KAFKA_MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, MAX_TEXT_BYTES.
type Limits struct {
	MaxMessageBytes int
	MaxPayloadBytes int
	MaxTextBytes    int
}

// DefaultLimits are the pipeline's defaults.
var DefaultLimits = Limits{MaxMessageBytes: 20 << 20, MaxPayloadBytes: 50 << 20,
	MaxTextBytes: 8 << 20}

// Rejection is a message the pipeline refuses: its reason code, a sentence, and the job_id
// and collection_id when they could be read.
type Rejection struct {
	Code         string
	Message      string
	JobID        *uint64
	CollectionID *string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

// Validate decides a page as the pipeline's staging does: the page, or a Rejection with
// its reason (a valid message of another kind is refused as invalid_field:kind).
func Validate(value []byte, limits Limits) (*IndexingJobMessage, *Rejection) {
	message, rejection := Decode(value, limits)
	if rejection != nil {
		return nil, rejection
	}
	page, ok := message.(*IndexingJobMessage)
	if !ok {
		return nil, &Rejection{Code: InvalidField + ":kind",
			Message: "a page's kind is " + KindPage + " (or absent), not " + message.Kind()}
	}
	return page, nil
}

// Decode decides a Kafka message value exactly as the pipeline's staging does
// (rag_pipeline/contract parse_message): a page (*IndexingJobMessage), a crawl completion
// (*CrawlCompletedMessage) or a page deletion (*PageDeletedMessage), or a Rejection with its reason. The shared vectors in
// contract/vectors/ hold both sides to the same decisions.
func Decode(value []byte, limits Limits) (Message, *Rejection) {
	if len(bytes.TrimLeft(value, " \t\n\r\v\f")) == 0 {
		return nil, &Rejection{Code: EmptyMessage,
			Message: "the message has no value (tombstone or empty)"}
	}
	if len(value) > limits.MaxMessageBytes {
		job, coll := sniff(value)
		return nil, &Rejection{TooLarge, fmt.Sprintf("the message is %d bytes, above the %d "+
			"byte limit", len(value), limits.MaxMessageBytes), job, coll}
	}
	var data any
	decoder := json.NewDecoder(bytes.NewReader(value))
	decoder.UseNumber()
	if !utf8.Valid(value) || decoder.Decode(&data) != nil || decoder.More() {
		job, coll := sniff(value)
		return nil, &Rejection{InvalidJSON, "the message is not valid JSON", job, coll}
	}
	object, ok := data.(map[string]any)
	if !ok {
		return nil, &Rejection{Code: NotAnObject, Message: "the message is JSON but not an object"}
	}
	job, coll := readableIDs(object)
	switch kind := object["kind"].(type) {
	case nil, string:
		if kind == CrawlCompletedKind {
			return decodeCrawlCompleted(object, value, coll)
		}
		if kind == PageDeletedKind {
			return decodePageDeleted(object, value, job, coll)
		}
		if kind != nil && kind != KindPage {
			return nil, &Rejection{UnknownKind, fmt.Sprintf("kind %q is not one of %s, %s, %s",
				kind, KindPage, CrawlCompletedKind, PageDeletedKind), job, coll}
		}
	}
	return decodePage(object, value, limits, job, coll)
}

func decodePage(object map[string]any, value []byte, limits Limits, job *uint64,
	coll *string) (Message, *Rejection) {
	reject := func(code, message string) (Message, *Rejection) {
		return nil, &Rejection{code, message, job, coll}
	}
	if code, message := firstProblem(object, fieldOrder, required, checkField); code != "" {
		return reject(code, message)
	}
	var message IndexingJobMessage
	if err := json.Unmarshal(value, &message); err != nil {
		return reject(InvalidField, err.Error()) // unreachable once every field checked out
	}
	if message.Content.ContentType == "" && !hasKey(object["content"], "content_type") {
		message.Content.ContentType = defaultContentType
	}
	if message.Content.Encoding == "" && !hasKey(object["content"], "encoding") {
		message.Content.Encoding = defaultEncoding
	}
	if code, text := checkContent(message.Content, limits); code != "" {
		return reject(code, text)
	}
	return &message, nil
}

// firstProblem checks the fields of object in order, as the pipeline does: the first
// required field missing or value refused is the one reported.
func firstProblem(object map[string]any, order []string, required map[string]bool,
	check func(field string, raw any) (string, string)) (string, string) {
	for _, field := range order {
		raw, present := object[field]
		if !present {
			if required[field] {
				return MissingField + ":" + field, "required field " + field + " is missing"
			}
			continue
		}
		if code, message := check(field, raw); code != "" {
			return code, message
		}
	}
	return "", ""
}

func hasKey(object any, key string) bool {
	m, ok := object.(map[string]any)
	if ok {
		_, ok = m[key]
	}
	return ok
}

func checkField(field string, raw any) (string, string) {
	invalid := func(name, why string) (string, string) {
		return InvalidField + ":" + name, "field " + name + ": " + why
	}
	switch field {
	case "job_id":
		if !integerIn(raw, 1) {
			return invalid(field, "must be an integer from 1 to 2^63-1")
		}
	case "request_id", "project_id", "depth":
		if !integerIn(raw, 0) {
			return invalid(field, "must be an integer from 0 to 2^63-1")
		}
	case "user_id":
		if _, ok := raw.(string); !ok {
			return invalid(field, "must be a string")
		}
	case "kind":
		if value, ok := raw.(string); !ok || value != KindPage {
			return invalid(field, "must be "+KindPage)
		}
	case "collection_id":
		value, ok := raw.(string)
		if !ok || !CollectionIDPattern.MatchString(value) {
			return InvalidCollectionID,
				"collection_id must be a UUID or 1-64 of the characters A-Z a-z 0-9 _ -"
		}
	case "alias":
		if raw != nil {
			if value, ok := raw.(string); !ok || CheckAlias(value) != nil {
				return InvalidAlias, "alias " + aliasRule
			}
		}
	case "url":
		value, ok := raw.(string)
		if !ok {
			return invalid(field, "must be a string")
		}
		if err := checkURL(value); err != nil {
			return InvalidURL, "url " + err.Error()
		}
	case "parent_url":
		if _, ok := raw.(string); !ok && raw != nil {
			return invalid(field, "must be a string or null")
		}
	case "discovered_at":
		value, ok := raw.(string)
		if !ok || !validTimestamp(value) {
			return invalid(field, "must be an RFC 3339 date-time")
		}
	case "content":
		return checkObject(field, raw, []string{"html", "text", "title", "content_type",
			"encoding"})
	case "metadata":
		return checkObject(field, raw, nil)
	}
	return "", ""
}

// checkObject: an object whose listed fields, when present, are strings (metadata's two
// fields may also be null).
func checkObject(field string, raw any, strings_ []string) (string, string) {
	object, ok := raw.(map[string]any)
	if !ok {
		return InvalidField + ":" + field, "field " + field + " must be an object"
	}
	for _, name := range strings_ {
		if value, present := object[name]; present {
			if _, ok := value.(string); !ok {
				return InvalidField + ":" + field + "." + name,
					"field " + field + "." + name + " must be a string"
			}
		}
	}
	if field == "metadata" {
		for _, name := range []string{"base_url", "crawl_session_id"} {
			if value, present := object[name]; present && value != nil {
				if _, ok := value.(string); !ok {
					return InvalidField + ":" + field + "." + name,
						"field " + field + "." + name + " must be a string or null"
				}
			}
		}
	}
	return "", ""
}

// integerIn: a JSON integer (not a float, not a bool) from min to 2^63-1.
func integerIn(raw any, min int64) bool {
	number, ok := raw.(json.Number)
	if !ok || !integerLiteral.MatchString(string(number)) {
		return false
	}
	value, err := strconv.ParseInt(string(number), 10, 64)
	return err == nil && value >= min
}

// Timestamp layouts of discovered_at: RFC 3339, and the forms without a zone (read as UTC)
// that the pipeline accepts as well.
var timestampLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999"}

// ParseTimestamp reads discovered_at.
func ParseTimestamp(value string) (time.Time, error) {
	for _, layout := range timestampLayouts {
		if t, err := time.Parse(layout, value); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 date-time", value)
}

func validTimestamp(value string) bool {
	_, err := ParseTimestamp(value)
	return err == nil
}

// checkURL: an http(s) URL with a host and a valid port, without control characters,
// at most 16 KiB (rag_pipeline/identity.py normalize_url).
func checkURL(value string) error {
	if len(value) > maxURLLength || controlChars.MatchString(value) {
		return errors.New("must be an http(s) URL without control characters, <= 16 KiB")
	}
	value = strings.TrimSpace(value)
	scheme, rest, found := strings.Cut(value, ":")
	scheme = strings.ToLower(scheme)
	if !found || (scheme != "http" && scheme != "https") {
		return fmt.Errorf("must be http or https, got %q", scheme)
	}
	if !strings.HasPrefix(rest, "//") {
		return errors.New("has no host")
	}
	netloc := rest[2:]
	if end := strings.IndexAny(netloc, "/?#"); end >= 0 {
		netloc = netloc[:end]
	}
	if at := strings.LastIndex(netloc, "@"); at >= 0 {
		netloc = netloc[at+1:]
	}
	host, port := netloc, ""
	if strings.HasPrefix(netloc, "[") {
		end := strings.Index(netloc, "]")
		if end < 0 {
			return errors.New("has an invalid IPv6 host")
		}
		host, port = netloc[1:end], strings.TrimPrefix(netloc[end+1:], ":")
	} else if colon := strings.LastIndex(netloc, ":"); colon >= 0 {
		host, port = netloc[:colon], netloc[colon+1:]
	}
	if port != "" {
		number, err := strconv.Atoi(port)
		if err != nil || number < 0 || number > 65535 || !integerLiteral.MatchString(port) {
			return errors.New("has an invalid port")
		}
	}
	if strings.TrimRight(host, ".") == "" {
		return errors.New("has no host")
	}
	return nil
}

func checkContent(content Content, limits Limits) (string, string) {
	encoding := strings.ToLower(strings.TrimSpace(content.Encoding))
	if !contains(Encodings, encoding) {
		return UnsupportedEncoding, fmt.Sprintf("content.encoding %q is not supported; use "+
			"one of %s", content.Encoding, strings.Join(Encodings, ", "))
	}
	mediaType, _, _ := strings.Cut(content.ContentType, ";")
	if !contains(htmlTypes, strings.ToLower(strings.TrimSpace(mediaType))) {
		return NotHTML, fmt.Sprintf("content.content_type %q is not HTML", content.ContentType)
	}
	if strings.TrimSpace(content.HTML) == "" && strings.TrimSpace(content.Text) == "" {
		return EmptyContent, "content.html and content.text are both empty"
	}
	if len(content.Text) > limits.MaxTextBytes {
		return TooLarge, fmt.Sprintf("content.text is %d bytes, above the %d byte limit",
			len(content.Text), limits.MaxTextBytes)
	}
	if content.HTML != "" {
		if _, err := DecodeHTML(content.HTML, encoding, limits.MaxPayloadBytes); err != nil {
			var rejection *Rejection
			if errors.As(err, &rejection) {
				return rejection.Code, rejection.Message
			}
			return BadGzip, err.Error()
		}
	}
	return "", ""
}

func contains(values []string, value string) bool {
	for _, v := range values {
		if v == value {
			return true
		}
	}
	return false
}

// StrictBase64 decodes standard base64 as Python's b64decode(validate=True) does: padding
// required, and no character outside the alphabet (Go's decoder would skip newlines).
func StrictBase64(text string) ([]byte, error) {
	if strings.ContainsAny(text, "\r\n") {
		return nil, errors.New("newline in base64")
	}
	return base64.StdEncoding.DecodeString(text)
}

func sniff(value []byte) (*uint64, *string) {
	head := value
	if len(head) > sniffWindow {
		head = head[:sniffWindow]
	}
	var job *uint64
	var coll *string
	if m := jobIDSniff.FindSubmatch(head); m != nil {
		if n, err := strconv.ParseUint(string(m[1]), 10, 64); err == nil && n > 0 && n <= maxInt64 {
			job = &n
		}
	}
	if m := collectionSniff.FindSubmatch(head); m != nil {
		c := string(m[1])
		coll = &c
	}
	return job, coll
}

func readableIDs(object map[string]any) (*uint64, *string) {
	var job *uint64
	var coll *string
	if number, ok := object["job_id"].(json.Number); ok && integerLiteral.MatchString(string(number)) {
		if n, err := strconv.ParseUint(string(number), 10, 64); err == nil && n > 0 && n <= maxInt64 {
			job = &n
		}
	}
	if value, ok := object["collection_id"].(string); ok && CollectionIDPattern.MatchString(value) {
		coll = &value
	}
	return job, coll
}
