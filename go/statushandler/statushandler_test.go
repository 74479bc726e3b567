package statushandler_test

// Against a real PostgreSQL: STATUSHANDLER_DATABASE_URL (tests/test_go_status_handler.py
// runs these on the suite's PostgreSQL). Each test gets a schema of its own, made by GORM's
// AutoMigrate.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/rag-pipeline/rag-pipeline/go/contract"
	"github.com/rag-pipeline/rag-pipeline/go/statushandler"
)

type step struct {
	FinishCrawl    bool            `json:"finish_crawl"`
	JobID          uint64          `json:"job_id"`
	Body           json.RawMessage `json:"body"`
	IdempotencyKey string          `json:"idempotency_key"`
	Report         int             `json:"report"`
	Answer         int             `json:"answer"`
	Outcome        string          `json:"outcome"`
}

type sequenceCase struct {
	Name   string `json:"name"`
	Jobs   int    `json:"jobs"`
	Steps  []step `json:"steps"`
	Expect struct {
		CompletedJobs int               `json:"completed_jobs"`
		FailedJobs    int               `json:"failed_jobs"`
		Status        string            `json:"status"`
		ErrorMsg      string            `json:"error_msg"`
		Jobs          map[string]string `json:"jobs"`
	} `json:"expect"`
}

// database is a fresh schema on the test PostgreSQL, its tables made by AutoMigrate.
func database(t *testing.T) *gorm.DB {
	t.Helper()
	db := emptySchema(t)
	if err := db.AutoMigrate(statushandler.Models()...); err != nil {
		t.Fatalf("AutoMigrate: %v", err)
	}
	return db
}

// emptySchema is a fresh schema on the test PostgreSQL, dropped after the test.
func emptySchema(t *testing.T) *gorm.DB {
	t.Helper()
	dsn := os.Getenv("STATUSHANDLER_DATABASE_URL")
	if dsn == "" {
		t.Skip("STATUSHANDLER_DATABASE_URL is unset: these tests need a PostgreSQL " +
			"(make test runs them on its own, through tests/test_go_status_handler.py)")
	}
	quiet := &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)}
	admin, err := gorm.Open(postgres.Open(dsn), quiet)
	if err != nil {
		t.Fatalf("connecting to %s: %v", "STATUSHANDLER_DATABASE_URL", err)
	}
	schema := "statushandler_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	if err := admin.Exec("CREATE SCHEMA " + schema).Error; err != nil {
		t.Fatal(err)
	}
	separator := " "
	if strings.Contains(dsn, "://") {
		separator = map[bool]string{true: "&", false: "?"}[strings.Contains(dsn, "?")]
		dsn += separator + "search_path=" + schema
	} else {
		dsn += separator + "search_path=" + schema
	}
	db, err := gorm.Open(postgres.Open(dsn), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
		admin.Exec("DROP SCHEMA " + schema + " CASCADE")
		if sqlDB, err := admin.DB(); err == nil {
			sqlDB.Close()
		}
	})
	return db
}

// crawl is a crawling request with jobs 1..n (their ids from firstJob on).
func crawl(t *testing.T, db *gorm.DB, firstJob uint, n int) contract.IndexingRequest {
	t.Helper()
	request := contract.IndexingRequest{UserID: "user_abc123", CollectionID: uuid.NewString(),
		Endpoint: "https://docs.example.com", ProjectID: 50, Status: statushandler.RequestCrawling}
	if err := db.Create(&request).Error; err != nil {
		t.Fatal(err)
	}
	jobs := make([]statushandler.IndexingJob, n)
	for i := range jobs {
		jobs[i] = statushandler.IndexingJob{ID: firstJob + uint(i),
			URL: fmt.Sprintf("https://docs.example.com/page-%d", i)}
	}
	if err := statushandler.AddJobs(context.Background(), db, request.ID, jobs); err != nil {
		t.Fatal(err)
	}
	return request
}

func patch(t *testing.T, url string, jobID uint64, body []byte, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPatch,
		fmt.Sprintf("%s/api/v1/indexing/jobs/%d/status", url, jobID), bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Outcome string `json:"outcome"`
	}
	json.NewDecoder(resp.Body).Decode(&answer)
	return resp.StatusCode, answer.Outcome
}

func TestSharedStatusSequences(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "contract", "vectors",
		"status_sequences.json"))
	if err != nil {
		t.Fatalf("the shared vectors are missing: %v", err)
	}
	var vectors struct {
		Cases []sequenceCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &vectors); err != nil || len(vectors.Cases) == 0 {
		t.Fatalf("contract/vectors/status_sequences.json: %v", err)
	}
	db := database(t)
	server := httptest.NewServer(statushandler.New(db))
	defer server.Close()
	for _, c := range vectors.Cases {
		t.Run(c.Name, func(t *testing.T) {
			db.Exec("TRUNCATE indexing_jobs, indexing_requests")
			request := crawl(t, db, 1, c.Jobs)
			for i, s := range c.Steps {
				if s.FinishCrawl {
					if err := statushandler.FinishCrawl(context.Background(), db, request.ID); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if s.Report > 0 {
					key, err := contract.ParseIdempotencyKey(s.IdempotencyKey)
					if err != nil || key.Sequence != s.Report {
						t.Fatalf("step %d: key %q is not report %d: %v", i, s.IdempotencyKey, s.Report, err)
					}
				}
				code, outcome := patch(t, server.URL, s.JobID, s.Body, s.IdempotencyKey)
				if code != s.Answer || outcome != s.Outcome {
					t.Fatalf("step %d: answered %d %q, want %d %q", i, code, outcome, s.Answer, s.Outcome)
				}
			}
			var got contract.IndexingRequest
			db.First(&got, request.ID)
			e := c.Expect
			if got.CompletedJobs != e.CompletedJobs || got.FailedJobs != e.FailedJobs ||
				got.Status != e.Status || got.ErrorMsg != e.ErrorMsg {
				t.Fatalf("request holds completed=%d failed=%d status=%q error_msg=%q, want %d %d %q %q",
					got.CompletedJobs, got.FailedJobs, got.Status, got.ErrorMsg,
					e.CompletedJobs, e.FailedJobs, e.Status, e.ErrorMsg)
			}
			for id, want := range e.Jobs {
				var job statushandler.IndexingJob
				n, _ := strconv.Atoi(id)
				db.First(&job, n)
				if job.Status != want {
					t.Errorf("job %s is %q, want %q", id, job.Status, want)
				}
			}
		})
	}
}

// Many jobs, each report delivered one to three times, all shuffled and sent at once from
// eight clients: the counters equal what the job rows say, and each job ends on its newest
// report.
func TestConcurrentRedeliveredReorderedReportsKeepCountersExact(t *testing.T) {
	db := database(t)
	server := httptest.NewServer(statushandler.New(db))
	defer server.Close()
	const jobs = 300
	request := crawl(t, db, 1000, jobs)
	if err := statushandler.FinishCrawl(context.Background(), db, request.ID); err != nil {
		t.Fatal(err)
	}
	type report struct {
		job  uint64
		body []byte
		key  string
	}
	random := rand.New(rand.NewSource(time.Now().UnixNano()))
	var reports []report
	want := map[uint64]string{}
	for j := uint64(1000); j < 1000+jobs; j++ {
		// Every third job failed first and was reindexed to completed (its second report).
		first := contract.StatusCompleted
		if j%3 == 0 {
			first = contract.StatusFailed
		}
		body := map[string]string{contract.StatusCompleted: `{"status":"completed"}`,
			contract.StatusFailed: `{"status":"failed","error_msg":"llm_error: timeout"}`}
		want[j] = first
		copies := []report{{j, []byte(body[first]), fmt.Sprintf("job-%d-%s", j, first)}}
		if j%3 == 0 {
			want[j] = contract.StatusCompleted
			copies = append(copies, report{j, []byte(body[contract.StatusCompleted]),
				fmt.Sprintf("job-%d-completed-2", j)})
		}
		for _, r := range copies {
			for n := 1 + random.Intn(3); n > 0; n-- {
				reports = append(reports, r)
			}
		}
	}
	random.Shuffle(len(reports), func(a, b int) { reports[a], reports[b] = reports[b], reports[a] })
	work := make(chan report)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if code, _ := patch(t, server.URL, r.job, r.body, r.key); code != http.StatusOK {
					t.Errorf("job %d %s: answered %d", r.job, r.key, code)
				}
			}
		}()
	}
	for _, r := range reports {
		work <- r
	}
	close(work)
	wg.Wait()

	var got contract.IndexingRequest
	db.First(&got, request.ID)
	var rows []statushandler.IndexingJob
	db.Where("request_id = ?", request.ID).Find(&rows)
	counted := map[string]int{}
	for _, row := range rows {
		counted[row.Status]++
		if row.Status != want[uint64(row.ID)] {
			t.Errorf("job %d ended %q, want %q", row.ID, row.Status, want[uint64(row.ID)])
		}
	}
	if got.CompletedJobs != counted[statushandler.JobCompleted] || got.FailedJobs != 0 ||
		got.CompletedJobs != jobs || got.Status != statushandler.RequestCompleted {
		t.Fatalf("request: completed=%d failed=%d status=%q; rows say %v (%d reports sent)",
			got.CompletedJobs, got.FailedJobs, got.Status, counted, len(reports))
	}
}

func TestPagesAreAddedOnlyWhileCrawling(t *testing.T) {
	db := database(t)
	request := crawl(t, db, 1, 1)
	ctx := context.Background()
	if err := statushandler.FinishCrawl(ctx, db, request.ID); err != nil {
		t.Fatal(err)
	}
	err := statushandler.AddJobs(ctx, db, request.ID, []statushandler.IndexingJob{{ID: 2, URL: "u"}})
	if err == nil || !strings.Contains(err.Error(), "no longer crawling") {
		t.Fatalf("adding a page after the crawl finished: %v", err)
	}
}
