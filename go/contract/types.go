// Package contract is the Go backend's side of the rag-pipeline contract: the Kafka message
// on topic indexing_jobs, the crawl request, the indexing request payload, the status update
// the pipeline PATCHes back, and the optional result event. Field names, Go types and JSON
// tags are those of the backend's design (shared/GO_CONTRACT.md); CollectionID is the change
// that design adds: one UUID per indexing request, the LightRAG workspace of its pages.
package contract

import (
	"encoding/json"
	"time"
)

// IndexingJobMessage is one crawled page on topic indexing_jobs (indexer/types.go).
type IndexingJobMessage struct {
	JobID        uint      `json:"job_id"`
	RequestID    uint      `json:"request_id"`
	ProjectID    uint      `json:"project_id"`
	UserID       string    `json:"user_id"`
	CollectionID string    `json:"collection_id"`   // NEW
	Alias        *string   `json:"alias,omitempty"` // NEW: the collection's name, if it has one
	URL          string    `json:"url"`
	Depth        int       `json:"depth"`
	ParentURL    *string   `json:"parent_url"`
	DiscoveredAt time.Time `json:"discovered_at"`
	Content      Content   `json:"content"`
	Metadata     Metadata  `json:"metadata"`
}

// UnmarshalJSON reads discovered_at in every form the pipeline accepts (ParseTimestamp).
func (m *IndexingJobMessage) UnmarshalJSON(data []byte) error {
	type plain IndexingJobMessage
	var raw struct {
		plain
		DiscoveredAt string `json:"discovered_at"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	discovered, err := ParseTimestamp(raw.DiscoveredAt)
	if err != nil {
		return err
	}
	*m = IndexingJobMessage(raw.plain)
	m.DiscoveredAt = discovered
	return nil
}

// Content is the page: HTML gzip-compressed then standard base64 (Encoding "gzip+base64"),
// and the text the crawler extracted.
type Content struct {
	HTML        string `json:"html"`
	Text        string `json:"text"`
	Title       string `json:"title"`
	ContentType string `json:"content_type"`
	Encoding    string `json:"encoding"`
}

// Metadata of the crawl a page came from.
type Metadata struct {
	BaseURL        string `json:"base_url"`
	CrawlSessionID string `json:"crawl_session_id"`
}

// CrawlRequest asks the crawler for a site (indexer/types.go).
type CrawlRequest struct {
	RequestID    uint    `json:"request_id"`
	ProjectID    uint    `json:"project_id"`
	UserID       string  `json:"user_id"`
	CollectionID string  `json:"collection_id"`   // NEW
	Alias        *string `json:"alias,omitempty"` // NEW
	BaseURL      string  `json:"base_url"`
	MaxPages     int     `json:"max_pages"`
	MaxDepth     int     `json:"max_depth"`
}

// IndexingRequestPayload is what the indexing consumer reads (consumers/indexing_consumer.go).
type IndexingRequestPayload struct {
	ID           uint    `json:"id"`
	UserID       string  `json:"user_id"`
	CollectionID string  `json:"collection_id"`   // NEW
	Alias        *string `json:"alias,omitempty"` // NEW
	Endpoint     string  `json:"endpoint"`
	ProjectID    uint    `json:"project_id"`
	Status       string  `json:"status"`
}

// IndexingRequest is the backend's GORM model (models/indexing_request.go); the migration in
// go/migrations adds its collection_id column to an existing table.
type IndexingRequest struct {
	ID            uint      `gorm:"primaryKey" json:"id"`
	UserID        string    `gorm:"not null" json:"user_id"`
	CollectionID  string    `gorm:"type:varchar(36);not null;uniqueIndex" json:"collection_id"` // NEW
	Alias         *string   `gorm:"type:varchar(64);index" json:"alias,omitempty"`              // NEW
	Endpoint      string    `gorm:"type:varchar(255);not null" json:"endpoint"`
	TotalJobs     int       `gorm:"not null" json:"total_jobs"`
	CompletedJobs int       `gorm:"not null" json:"completed_jobs"`
	FailedJobs    int       `gorm:"not null;default:0" json:"failed_jobs"` // NEW
	ProjectID     uint      `gorm:"not null" json:"project_id"`
	Status        string    `gorm:"type:varchar(50);not null" json:"status"`
	ErrorMsg      string    `gorm:"type:text" json:"error_msg,omitempty"`
	CreatedAt     time.Time `gorm:"autoCreateTime" json:"created_at"`
	UpdatedAt     time.Time `gorm:"autoUpdateTime" json:"updated_at"`
}

// Job statuses the pipeline reports (PATCH /api/v1/indexing/jobs/{job_id}/status).
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// StatusUpdate is the PATCH body; decode it with DecodeStatusUpdate.
type StatusUpdate struct {
	Status   string  `json:"status"`
	ErrorMsg *string `json:"error_msg,omitempty"`
}

// JobResultEvent is the optional event on topic indexing_job_results.
type JobResultEvent struct {
	JobID       uint          `json:"job_id"`
	RequestID   *uint         `json:"request_id"`
	Status      string        `json:"status"`
	ErrorMsg    *string       `json:"error_msg"`
	ProcessedAt time.Time     `json:"processed_at"`
	Metrics     ResultMetrics `json:"metrics"`
}

// ResultMetrics of a job's result event.
type ResultMetrics struct {
	TextLength      int     `json:"text_length"`
	ChunksCreated   int     `json:"chunks_created"`
	EmbeddingTimeMs float64 `json:"embedding_time_ms"`
	StorageTimeMs   float64 `json:"storage_time_ms"`
}
