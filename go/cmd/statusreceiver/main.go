// Command statusreceiver is the Go backend's status endpoint, as a real Go handler decodes
// it: PATCH /api/v1/indexing/jobs/{job_id}/status with a body read strictly by
// contract.DecodeStatusUpdate (unknown fields and bad values answer 400). It records every
// call, so tests and people can see what the pipeline reported:
//
//	GET /calls[?job_id=N]  every call, oldest first (job_id, status, error_msg,
//	                       idempotency key, answer, replay)
//	GET /jobs    the last accepted status per job
//	GET /health  200
//
//	statusreceiver -listen 127.0.0.1:8090 [-record calls.jsonl]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"ragpipeline/contract"
)

type call struct {
	JobID          uint64  `json:"job_id"`
	Status         string  `json:"status,omitempty"`
	ErrorMsg       *string `json:"error_msg,omitempty"`
	IdempotencyKey string  `json:"idempotency_key,omitempty"`
	Answered       int     `json:"answered"`
	Replay         bool    `json:"replay"` // an accepted key seen before: an idempotent retry
	Problem        string  `json:"problem,omitempty"`
	At             string  `json:"at"`
}

type recorder struct {
	mu     sync.Mutex
	calls  []call
	record *os.File
}

func (r *recorder) add(c call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	if r.record != nil {
		line, _ := json.Marshal(c)
		r.record.Write(append(line, '\n'))
	}
}

func (r *recorder) patchStatus(w http.ResponseWriter, req *http.Request) {
	jobID, err := strconv.ParseUint(req.PathValue("job_id"), 10, 63)
	if err != nil || jobID == 0 {
		http.Error(w, "job_id in the path must be a positive 64-bit integer", http.StatusBadRequest)
		return
	}
	c := call{JobID: jobID, IdempotencyKey: req.Header.Get("Idempotency-Key"),
		At: time.Now().UTC().Format(time.RFC3339Nano)}
	update, err := contract.DecodeStatusUpdate(req.Body)
	if err != nil {
		c.Answered, c.Problem = http.StatusBadRequest, err.Error()
		r.add(c)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.Status, c.ErrorMsg, c.Answered = update.Status, update.ErrorMsg, http.StatusOK
	c.Replay = r.seen(c.IdempotencyKey)
	r.add(c)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"job_id": jobID, "status": update.Status})
}

func (r *recorder) seen(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.calls {
		if key != "" && c.IdempotencyKey == key && c.Answered == http.StatusOK {
			return true
		}
	}
	return false
}

func (r *recorder) list(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	found := []call{}
	for _, c := range r.calls {
		if id := req.URL.Query().Get("job_id"); id == "" || id == strconv.FormatUint(c.JobID, 10) {
			found = append(found, c)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(found)
}

func (r *recorder) jobs(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := map[string]call{}
	for _, c := range r.calls {
		if c.Answered == http.StatusOK {
			last[strconv.FormatUint(c.JobID, 10)] = c
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(last)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to listen on")
	recordPath := flag.String("record", "", "also append every call to this JSON-lines file")
	flag.Parse()
	r := &recorder{}
	if *recordPath != "" {
		file, err := os.OpenFile(*recordPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "statusreceiver:", err)
			os.Exit(2)
		}
		r.record = file
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PATCH /api/v1/indexing/jobs/{job_id}/status", r.patchStatus)
	mux.HandleFunc("GET /calls", r.list)
	mux.HandleFunc("GET /jobs", r.jobs)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok"))
	})
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("statusreceiver: listening on %s", *listen)
	if err := server.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "statusreceiver:", err)
		os.Exit(2)
	}
}
