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
// With -token-env NAME, a PATCH must carry "Authorization: Bearer <value of $NAME>" (the
// token is read from the environment, never from the command line); others answer 401.
//
//	statusreceiver -listen 127.0.0.1:8090 [-record calls.jsonl] [-token-env GO_API_TOKEN]
package main

import (
	"crypto/subtle"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rag-pipeline/rag-pipeline/go/contract"
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
	token  string // the bearer token a PATCH must carry; empty: none
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
	if !r.authorized(req) {
		c.Answered, c.Problem = http.StatusUnauthorized, "missing or wrong bearer token"
		r.add(c)
		w.Header().Set("WWW-Authenticate", "Bearer")
		http.Error(w, c.Problem, http.StatusUnauthorized)
		return
	}
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

func (r *recorder) authorized(req *http.Request) bool {
	if r.token == "" {
		return true
	}
	given := req.Header.Get("Authorization")
	return subtle.ConstantTimeCompare([]byte(given), []byte("Bearer "+r.token)) == 1
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
	tokenEnv := flag.String("token-env", "", "require the bearer token held by this environment variable")
	flag.Parse()
	r := &recorder{}
	if *tokenEnv != "" {
		r.token = os.Getenv(*tokenEnv)
		if r.token == "" {
			fmt.Fprintf(os.Stderr, "statusreceiver: -token-env %s: the variable is empty; set it to the token\n", *tokenEnv)
			os.Exit(2)
		}
	}
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
