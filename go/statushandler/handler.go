package statushandler

import (
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"strconv"

	"gorm.io/gorm"

	"github.com/rag-pipeline/rag-pipeline/go/contract"
)

// Route is the pattern the handler serves.
const Route = "PATCH /api/v1/indexing/jobs/{job_id}/status"

// New is the status endpoint over db (its schema made by AutoMigrate(Models()...)). Answers:
// 200 with the outcome (applied, unchanged or stale: all mean "delivered"); 400 for a body
// or Idempotency-Key the contract refuses; 404 for an unknown job; 503 when the database
// fails (the pipeline retries). Authentication is the backend's own middleware's.
func New(db *gorm.DB) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(Route, func(w http.ResponseWriter, r *http.Request) {
		patchStatus(db, w, r)
	})
	return mux
}

func patchStatus(db *gorm.DB, w http.ResponseWriter, r *http.Request) {
	jobID, err := strconv.ParseUint(r.PathValue("job_id"), 10, 64)
	if err != nil || jobID == 0 {
		answer(w, http.StatusBadRequest, map[string]any{"error": "job_id must be a positive integer"})
		return
	}
	update, err := contract.DecodeStatusUpdate(r.Body)
	if err != nil {
		answer(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	sequence := 0
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		report, err := contract.ParseIdempotencyKey(key)
		if err == nil && (report.JobID != jobID || report.Status != update.Status) {
			err = errors.New("the Idempotency-Key names another job or status than the request")
		}
		if err != nil {
			answer(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		sequence = report.Sequence
	}
	outcome, err := Apply(r.Context(), db, jobID, update, sequence)
	switch {
	case errors.Is(err, ErrUnknownJob):
		answer(w, http.StatusNotFound, map[string]any{"error": err.Error(), "job_id": jobID})
	case err != nil:
		log.Printf("statushandler: job %d: %v", jobID, err)
		answer(w, http.StatusServiceUnavailable, map[string]any{"error": "database unavailable"})
	default:
		answer(w, http.StatusOK, map[string]any{"job_id": jobID, "outcome": outcome})
	}
}

func answer(w http.ResponseWriter, code int, body map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}
