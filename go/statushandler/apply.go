package statushandler

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/rag-pipeline/rag-pipeline/go/contract"
)

// Outcome says what a report did.
type Outcome string

const (
	Applied   Outcome = "applied"   // the job's state (or its reason) changed
	Unchanged Outcome = "unchanged" // this report again, or the state the job already has
	Stale     Outcome = "stale"     // a newer report was applied before this one
)

// ErrUnknownJob: no job has that id.
var ErrUnknownJob = errors.New("no indexing job has this id")

// ErrRequestNotCrawling: pages are added only while their request is crawling.
var ErrRequestNotCrawling = errors.New("the indexing request is no longer crawling")

// Apply records one status report of job jobID. sequence is the report's number from its
// Idempotency-Key (0 when it came without one: then a late report cannot be told from a
// new one, and the last to arrive wins).
func Apply(ctx context.Context, db *gorm.DB, jobID uint64, update contract.StatusUpdate,
	sequence int) (Outcome, error) {
	outcome := Unchanged
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Every writer locks the job row, then its request's row: one order, no deadlock.
		var job IndexingJob
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&job, jobID).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrUnknownJob
		} else if err != nil {
			return err
		}
		if sequence > 0 && sequence < job.ReportSequence {
			outcome = Stale
			return nil
		}
		if sequence > 0 && sequence == job.ReportSequence {
			return nil // this report again
		}
		errorMsg := ""
		if update.Status == JobFailed && update.ErrorMsg != nil {
			errorMsg = *update.ErrorMsg
		}
		previous := job.Status
		if previous != update.Status || job.ErrorMsg != errorMsg {
			outcome = Applied
		}
		if err := tx.Model(&job).Updates(map[string]any{"status": update.Status,
			"error_msg": errorMsg, "report_sequence": max(sequence, job.ReportSequence),
		}).Error; err != nil {
			return err
		}
		if previous == update.Status {
			return nil
		}
		return moveCounters(tx, job.RequestID, previous, update.Status)
	})
	return outcome, err
}

// moveCounters moves the request's counters from a job's previous state to its new one.
func moveCounters(tx *gorm.DB, requestID uint, previous, next string) error {
	var request contract.IndexingRequest
	if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&request, requestID).
		Error; err != nil {
		return fmt.Errorf("the request %d of the job: %w", requestID, err)
	}
	is := func(state, counted string) int {
		if state == counted {
			return 1
		}
		return 0
	}
	request.CompletedJobs += is(next, JobCompleted) - is(previous, JobCompleted)
	request.FailedJobs += is(next, JobFailed) - is(previous, JobFailed)
	return saveProgress(tx, &request)
}

// saveProgress writes the counters and, once the crawl has finished and every job is
// terminal, marks the request completed (with how many failed).
func saveProgress(tx *gorm.DB, request *contract.IndexingRequest) error {
	terminal := request.CompletedJobs + request.FailedJobs
	if request.Status == RequestIndexing && terminal == request.TotalJobs {
		request.Status = RequestCompleted
	}
	request.ErrorMsg = ""
	if request.Status == RequestCompleted && request.FailedJobs > 0 {
		request.ErrorMsg = fmt.Sprintf("%d of %d jobs failed", request.FailedJobs,
			request.TotalJobs)
	}
	return tx.Model(request).Updates(map[string]any{"completed_jobs": request.CompletedJobs,
		"failed_jobs": request.FailedJobs, "status": request.Status,
		"error_msg": request.ErrorMsg}).Error
}

// AddJobs records pages the crawler publishes for a crawling request: each a pending job
// (its ID the job_id of the Kafka message), TotalJobs counting them.
func AddJobs(ctx context.Context, db *gorm.DB, requestID uint, jobs []IndexingJob) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var request contract.IndexingRequest
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&request, requestID).
			Error; err != nil {
			return fmt.Errorf("the request %d: %w", requestID, err)
		}
		if request.Status != RequestCrawling {
			return fmt.Errorf("request %d is %s: %w", requestID, request.Status,
				ErrRequestNotCrawling)
		}
		for i := range jobs {
			jobs[i].RequestID, jobs[i].Status = requestID, JobPending
		}
		if err := tx.Create(&jobs).Error; err != nil {
			return err
		}
		return tx.Model(&request).Update("total_jobs", request.TotalJobs+len(jobs)).Error
	})
}

// FinishCrawl says the crawler published every page of the request: it completes as soon
// as every job is terminal (at once, if they already are). Idempotent.
func FinishCrawl(ctx context.Context, db *gorm.DB, requestID uint) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var request contract.IndexingRequest
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&request, requestID).
			Error; err != nil {
			return fmt.Errorf("the request %d: %w", requestID, err)
		}
		if request.Status != RequestCrawling {
			return nil
		}
		request.Status = RequestIndexing
		return saveProgress(tx, &request)
	})
}
