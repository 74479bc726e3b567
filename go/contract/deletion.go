package contract

import "encoding/json"

// PageDeletedKind removes one page from a collection.
const PageDeletedKind = "page_deleted"

// PageDeletedMessage removes the page at URL from CollectionID: its document leaves
// LightRAG with the entities and relations only it supported, and a later page message for
// the URL indexes it again. It is a job: the Go API gets a status for JobID (completed also
// when the page was not indexed). Publish it with the collection id as key (NewPageDeleted;
// go/cmd/producer -delete), so that it is ordered with the collection's pages. A Kafka
// tombstone is not a deletion: it names no job and no page, and is dead-lettered.
type PageDeletedMessage struct {
	KindName     string  `json:"kind"` // always PageDeletedKind
	JobID        uint64  `json:"job_id"`
	RequestID    uint    `json:"request_id"`
	CollectionID string  `json:"collection_id"`
	Alias        *string `json:"alias,omitempty"`
	URL          string  `json:"url"`
}

// Kind of a page deletion.
func (*PageDeletedMessage) Kind() string { return PageDeletedKind }

// NewPageDeleted is job jobID removing url from request r's collection.
func NewPageDeleted(jobID uint64, r CrawlRequest, url string) PageDeletedMessage {
	return PageDeletedMessage{KindName: PageDeletedKind, JobID: jobID, RequestID: r.RequestID,
		CollectionID: r.CollectionID, Alias: r.Alias, URL: url}
}

var (
	deletionOrder    = []string{"kind", "job_id", "request_id", "collection_id", "alias", "url"}
	deletionRequired = map[string]bool{"kind": true, "job_id": true, "request_id": true,
		"collection_id": true, "url": true}
)

func decodePageDeleted(object map[string]any, value []byte, job *uint64, coll *string) (Message,
	*Rejection) {
	reject := func(code, message string) (Message, *Rejection) {
		return nil, &Rejection{code, message, job, coll}
	}
	check := func(field string, raw any) (string, string) {
		if field == "kind" {
			return "", "" // already read: page_deleted
		}
		return checkField(field, raw)
	}
	if code, message := firstProblem(object, deletionOrder, deletionRequired, check); code != "" {
		return reject(code, message)
	}
	var message PageDeletedMessage
	if err := json.Unmarshal(value, &message); err != nil {
		return reject(InvalidField, err.Error()) // unreachable once every field checked out
	}
	return &message, nil
}
