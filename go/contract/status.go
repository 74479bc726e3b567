package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxErrorMsg is the longest error_msg a status update may carry.
const MaxErrorMsg = 4000

// DecodeStatusUpdate reads a PATCH body as a strict Go handler does: a JSON object with a
// known status, no unknown field, error_msg a string (required when the status is failed)
// of at most MaxErrorMsg characters. An error means 400 Bad Request.
func DecodeStatusUpdate(body io.Reader) (StatusUpdate, error) {
	var update StatusUpdate
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(io.LimitReader(body, 1<<20)); err != nil {
		return update, fmt.Errorf("reading the body: %w", err)
	}
	// encoding/json matches field names case-insensitively: check the exact names first.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw.Bytes(), &fields); err == nil {
		for name := range fields {
			if name != "status" && name != "error_msg" {
				return update, fmt.Errorf("unknown field %q", name)
			}
		}
	}
	decoder := json.NewDecoder(bytes.NewReader(raw.Bytes()))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&update); err != nil {
		return update, fmt.Errorf("the body is not a status update: %w", err)
	}
	if decoder.More() {
		return update, errors.New("the body holds more than one JSON value")
	}
	switch update.Status {
	case StatusCompleted:
	case StatusFailed:
		if update.ErrorMsg == nil || *update.ErrorMsg == "" {
			return update, errors.New("error_msg is required when status is failed")
		}
	case "":
		return update, errors.New("status is required")
	default:
		return update, fmt.Errorf("status must be %q or %q, got %q", StatusCompleted,
			StatusFailed, update.Status)
	}
	if update.ErrorMsg != nil && len([]rune(*update.ErrorMsg)) > MaxErrorMsg {
		return update, fmt.Errorf("error_msg is longer than %d characters", MaxErrorMsg)
	}
	return update, nil
}
