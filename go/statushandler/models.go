// Package statushandler is a reference implementation of the Go backend's status endpoint,
// PATCH /api/v1/indexing/jobs/{job_id}/status, over the backend's GORM models: it applies
// each job's state change exactly once, so a request's counters stay exact although the
// pipeline delivers statuses at least once, a retried report can arrive after a newer one,
// and a job can go from failed to completed after a reindex.
//
// How: one row per job holds its state and the number of the last report applied (the n
// of the pipeline's Idempotency-Key, job-{id}-{status}[-{n}]). A report is applied under
// that row's lock; one not newer than the last applied is answered 200 and changes nothing;
// a state change moves the request's counters in the same transaction. The request is
// complete when the crawl has finished (FinishCrawl) and every job is terminal.
package statushandler

import (
	"time"

	"github.com/rag-pipeline/rag-pipeline/go/contract"
)

// Job states: pending until the pipeline reports, then what it reported last.
const (
	JobPending   = "pending"
	JobCompleted = contract.StatusCompleted
	JobFailed    = contract.StatusFailed
)

// Request states: crawling while the crawler publishes pages (TotalJobs grows), indexing
// once the crawl has finished, completed when every job is terminal.
const (
	RequestCrawling  = "crawling"
	RequestIndexing  = "indexing"
	RequestCompleted = "completed"
)

// IndexingJob is the backend's row per published page (models/indexing_job.go).
type IndexingJob struct {
	ID        uint   `gorm:"primaryKey" json:"id"`
	RequestID uint   `gorm:"not null;index" json:"request_id"`
	URL       string `gorm:"type:text;not null" json:"url"`
	Status    string `gorm:"type:varchar(50);not null" json:"status"`
	ErrorMsg  string `gorm:"type:text" json:"error_msg,omitempty"`
	// The n of the last report applied (0: none yet, or reports without a key).
	ReportSequence int       `gorm:"not null;default:0" json:"report_sequence"` // NEW
	CreatedAt      time.Time `gorm:"autoCreateTime" json:"created_at"`
	UpdatedAt      time.Time `gorm:"autoUpdateTime" json:"updated_at"`
}

// Models are what AutoMigrate needs for the handler.
func Models() []any {
	return []any{&contract.IndexingRequest{}, &IndexingJob{}}
}
