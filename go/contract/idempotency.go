package contract

import (
	"fmt"
	"regexp"
	"strconv"
)

// The pipeline's Idempotency-Key names one status report of one job: job-{id}-{status} for
// the job's first report, job-{id}-{status}-{n} for its n-th (a job reindexed from failed
// to completed reports again). n orders one job's reports, so a handler can tell a late or
// repeated report from a newer one (rag_pipeline/ledger/outbox.py, idempotency_key).
var idempotencyKey = regexp.MustCompile(`^job-([0-9]+)-(completed|failed)(?:-([0-9]+))?$`)

// ReportKey is a parsed Idempotency-Key.
type ReportKey struct {
	JobID    uint64
	Status   string
	Sequence int // 1 for a job's first report, n for its n-th
}

// ParseIdempotencyKey reads a key the pipeline wrote; an error names what does not fit.
func ParseIdempotencyKey(key string) (ReportKey, error) {
	parts := idempotencyKey.FindStringSubmatch(key)
	if parts == nil {
		return ReportKey{}, fmt.Errorf(
			"Idempotency-Key %q is not job-{job_id}-{completed|failed}[-{n}]", key)
	}
	jobID, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return ReportKey{}, fmt.Errorf("Idempotency-Key %q: job id out of range", key)
	}
	sequence := 1
	if parts[3] != "" {
		sequence, err = strconv.Atoi(parts[3])
		if err != nil || sequence < 2 {
			return ReportKey{}, fmt.Errorf(
				"Idempotency-Key %q: a report number is 2 or more (the first has none)", key)
		}
	}
	return ReportKey{JobID: jobID, Status: parts[2], Sequence: sequence}, nil
}
