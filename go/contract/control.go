package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Kinds of message on topic indexing_jobs. A message without "kind" is a page.
const (
	KindPage           = "page"
	CrawlCompletedKind = "crawl_completed"
)

// Message is what Decode returns: *IndexingJobMessage, *CrawlCompletedMessage or
// *PageDeletedMessage.
type Message interface{ Kind() string }

// Kind of a page.
func (*IndexingJobMessage) Kind() string { return KindPage }

// CrawlCompletedMessage says that crawl request RequestID of CollectionID is complete: the
// crawler published Pages page messages for it. Publish it after the request's last page
// with the same key (the collection id), so that it lands in the same partition, after
// them (NewCrawlCompleted; go/cmd/producer does so).
type CrawlCompletedMessage struct {
	KindName     string    `json:"kind"` // always CrawlCompletedKind
	RequestID    uint      `json:"request_id"`
	CollectionID string    `json:"collection_id"`
	Alias        *string   `json:"alias,omitempty"`
	Pages        int       `json:"pages"`
	CompletedAt  time.Time `json:"completed_at"`
}

// Kind of a crawl completion.
func (*CrawlCompletedMessage) Kind() string { return CrawlCompletedKind }

// NewCrawlCompleted is the message ending crawl request r, which published pages pages.
func NewCrawlCompleted(r CrawlRequest, pages int, completedAt time.Time) CrawlCompletedMessage {
	return CrawlCompletedMessage{KindName: CrawlCompletedKind, RequestID: r.RequestID,
		CollectionID: r.CollectionID, Alias: r.Alias, Pages: pages,
		CompletedAt: completedAt.UTC()}
}

// An alias is a name people choose for a collection (pg-docs, docs.example.com): 1-64 of
// a-z 0-9 . _ -, starting and ending with a letter or digit, and not a UUID (that is a
// collection id). Lower case only, so one alias is never two.
var (
	aliasPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$`)
	uuidPattern  = regexp.MustCompile(`^[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$`)
)

const aliasRule = "must be 1-64 of the characters a-z 0-9 . _ -, start and end with a " +
	"letter or digit, and not be a UUID (that is a collection id)"

// CheckAlias says why alias is not one (nil: it is).
func CheckAlias(alias string) error {
	if !aliasPattern.MatchString(alias) || uuidPattern.MatchString(alias) {
		return errors.New("alias " + aliasRule)
	}
	return nil
}

var (
	completionOrder    = []string{"kind", "request_id", "collection_id", "alias", "pages", "completed_at"}
	completionRequired = map[string]bool{"kind": true, "request_id": true, "collection_id": true,
		"pages": true, "completed_at": true}
)

func decodeCrawlCompleted(object map[string]any, value []byte, coll *string) (Message,
	*Rejection) {
	reject := func(code, message string) (Message, *Rejection) {
		return nil, &Rejection{code, message, nil, coll}
	}
	if code, message := firstProblem(object, completionOrder, completionRequired,
		checkCompletionField); code != "" {
		return reject(code, message)
	}
	var message CrawlCompletedMessage
	if err := json.Unmarshal(value, &message); err != nil {
		return reject(InvalidField, err.Error()) // unreachable once every field checked out
	}
	return &message, nil
}

func checkCompletionField(field string, raw any) (string, string) {
	invalid := InvalidField + ":" + field
	switch field {
	case "request_id", "pages":
		if !integerIn(raw, 0) {
			return invalid, "field " + field + ": must be an integer from 0 to 2^63-1"
		}
	case "completed_at":
		if text, ok := raw.(string); !ok || !validTimestamp(text) {
			return invalid, "field " + field + ": must be an RFC 3339 date-time"
		}
	case "collection_id", "alias":
		return checkField(field, raw)
	}
	return "", ""
}

// UnmarshalJSON reads completed_at in every form the pipeline accepts (ParseTimestamp).
func (m *CrawlCompletedMessage) UnmarshalJSON(data []byte) error {
	type plain CrawlCompletedMessage
	var raw struct {
		plain
		CompletedAt string `json:"completed_at"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	completed, err := ParseTimestamp(raw.CompletedAt)
	if err != nil {
		return fmt.Errorf("completed_at: %w", err)
	}
	*m = CrawlCompletedMessage(raw.plain)
	m.CompletedAt = completed
	return nil
}
