package contract

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The shared files of the contract, beside the Go module (see scripts/contract_files.py).
var contractDir = filepath.Join("..", "..", "contract")

type messageVector struct {
	Name        string  `json:"name"`
	ValueBase64 *string `json:"value_base64"`
	Expect      string  `json:"expect"`
	JobID       *uint64 `json:"job_id"`
	Kind        string  `json:"kind"`
}

type statusVector struct {
	Name     string `json:"name"`
	Body     string `json:"body"`
	Accepted bool   `json:"accepted"`
}

func load[T any](t *testing.T, name string) []T {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(contractDir, "vectors", name))
	if err != nil {
		t.Fatalf("the shared vectors are missing: %v", err)
	}
	var vectors []T
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(vectors) == 0 {
		t.Fatalf("%s holds no vector", name)
	}
	return vectors
}

func (v messageVector) value(t *testing.T) []byte {
	if v.ValueBase64 == nil {
		return nil
	}
	value, err := base64.StdEncoding.DecodeString(*v.ValueBase64)
	if err != nil {
		t.Fatalf("%s: %v", v.Name, err)
	}
	return value
}

func TestGoDecidesEveryMessageVectorAsTheFileSays(t *testing.T) {
	for _, v := range load[messageVector](t, "messages.json") {
		t.Run(v.Name, func(t *testing.T) {
			message, rejection := Decode(v.value(t), DefaultLimits)
			if v.Expect == "accepted" {
				if rejection != nil {
					t.Fatalf("rejected as %v", rejection)
				}
				if message.Kind() != v.Kind {
					t.Fatalf("decoded a %s, want a %s", message.Kind(), v.Kind)
				}
				if page, ok := message.(*IndexingJobMessage); ok && uint64(page.JobID) != *v.JobID {
					t.Fatalf("job_id %d, want %d", page.JobID, *v.JobID)
				}
				return
			}
			if rejection == nil {
				t.Fatalf("accepted, want %s", v.Expect)
			}
			if rejection.Code != v.Expect {
				t.Fatalf("reason %q (%s), want %q", rejection.Code, rejection.Message, v.Expect)
			}
			if (rejection.JobID == nil) != (v.JobID == nil) ||
				(v.JobID != nil && *rejection.JobID != *v.JobID) {
				t.Fatalf("job_id read %v, want %v", rejection.JobID, v.JobID)
			}
		})
	}
}

func TestGoDecidesEveryStatusBodyAsTheFileSays(t *testing.T) {
	for _, v := range load[statusVector](t, "status_bodies.json") {
		t.Run(v.Name, func(t *testing.T) {
			_, err := DecodeStatusUpdate(strings.NewReader(v.Body))
			if (err == nil) != v.Accepted {
				t.Fatalf("accepted=%v (%v), want %v", err == nil, err, v.Accepted)
			}
		})
	}
}

func compile(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	path, _ := filepath.Abs(filepath.Join(contractDir, "schema", name+".schema.json"))
	compiler := jsonschema.NewCompiler()
	compiler.AssertFormat() // date-time is a rule of the contract, not a remark
	schema, err := compiler.Compile(path)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return schema
}

func TestAcceptedMessagesMatchTheSchemaAndStructuralRejectionsDoNot(t *testing.T) {
	schemas := map[string]*jsonschema.Schema{KindPage: compile(t, "indexing_job"),
		CrawlCompletedKind: compile(t, "crawl_completed"),
		PageDeletedKind:    compile(t, "page_deleted")}
	structural := []string{"not_an_object", "missing_field", "invalid_field",
		"invalid_collection_id", "invalid_alias"}
	for _, v := range load[messageVector](t, "messages.json") {
		schema := schemas[v.Kind]
		value := v.value(t)
		instance, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
		if err != nil {
			continue // not JSON: nothing for a schema to say
		}
		err = schema.Validate(instance)
		if v.Expect == "accepted" && err != nil {
			t.Errorf("%s: accepted by the pipeline, refused by the schema: %v", v.Name, err)
		}
		for _, kind := range structural {
			// 12345.0 is an integer to JSON Schema, a float to both validators.
			if strings.HasPrefix(v.Expect, kind) && err == nil && v.Name != "job_id float" {
				t.Errorf("%s: %s, yet the schema accepts it", v.Name, v.Expect)
			}
		}
	}
}

func TestStatusBodiesTheGoTypesWriteMatchTheSchema(t *testing.T) {
	schema := compile(t, "status_update")
	reason := "bad_gzip: content.html is not valid gzip data"
	for _, update := range []StatusUpdate{{Status: StatusCompleted},
		{Status: StatusFailed, ErrorMsg: &reason}} {
		body, _ := json.Marshal(update)
		instance, _ := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err := schema.Validate(instance); err != nil {
			t.Errorf("%s: %v", body, err)
		}
		if _, err := DecodeStatusUpdate(bytes.NewReader(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}

func TestEncodePageIsGzipThenStandardBase64(t *testing.T) {
	html := []byte("<html><body><p>Getting started</p></body></html>")
	compressed, err := base64.StdEncoding.DecodeString(EncodePage(html))
	if err != nil {
		t.Fatal(err)
	}
	reader, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(reader)
	if !bytes.Equal(plain, html) {
		t.Fatalf("round trip gave %q", plain)
	}
}

func TestAMessageTheGoSideBuildsIsAcceptedByTheSameRules(t *testing.T) {
	request := CrawlRequest{RequestID: 100, ProjectID: 50, UserID: "user_abc123",
		CollectionID: "550e8400-e29b-41d4-a716-446655440000",
		BaseURL:      "https://docs.example.com"}
	message := NewJobMessage(12345, request, Page{URL: "https://docs.example.com/a",
		ParentURL: "https://docs.example.com", Depth: 1, Title: "A",
		HTML:         []byte("<html><body><p>A page</p></body></html>"),
		DiscoveredAt: time.Date(2025, 12, 24, 10, 30, 0, 0, time.UTC)})
	value, _ := json.Marshal(message)
	decoded, rejection := Validate(value, DefaultLimits)
	if rejection != nil {
		t.Fatalf("the pipeline's rules refuse what the Go side builds: %v", rejection)
	}
	if decoded.CollectionID != request.CollectionID || !decoded.DiscoveredAt.Equal(message.DiscoveredAt) {
		t.Fatalf("decoded %+v", decoded)
	}
	instance, _ := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err := compile(t, "indexing_job").Validate(instance); err != nil {
		t.Fatalf("schema: %v", err)
	}
}

func TestACrawlCompletionTheGoSideBuildsIsAcceptedByTheSameRules(t *testing.T) {
	alias := "pg-docs"
	request := CrawlRequest{RequestID: 100, ProjectID: 50, UserID: "user_abc123",
		CollectionID: "550e8400-e29b-41d4-a716-446655440000", Alias: &alias}
	value, _ := json.Marshal(NewCrawlCompleted(request, 60,
		time.Date(2025, 12, 24, 11, 0, 0, 0, time.UTC)))
	message, rejection := Decode(value, DefaultLimits)
	if rejection != nil {
		t.Fatalf("the pipeline's rules refuse what the Go side builds: %v", rejection)
	}
	done, ok := message.(*CrawlCompletedMessage)
	if !ok || done.Pages != 60 || *done.Alias != alias || done.CollectionID != request.CollectionID {
		t.Fatalf("decoded %+v", message)
	}
	instance, _ := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err := compile(t, "crawl_completed").Validate(instance); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if _, rejection := Validate(value, DefaultLimits); rejection == nil {
		t.Fatal("Validate (pages only) accepted a crawl completion")
	}
}

func TestAPageDeletionTheGoSideBuildsIsAcceptedByTheSameRules(t *testing.T) {
	alias := "pg-docs"
	request := CrawlRequest{RequestID: 101, CollectionID: "550e8400-e29b-41d4-a716-446655440000",
		Alias: &alias}
	value, _ := json.Marshal(NewPageDeleted(12399, request, "https://docs.example.com/a"))
	message, rejection := Decode(value, DefaultLimits)
	if rejection != nil {
		t.Fatalf("the pipeline's rules refuse what the Go side builds: %v", rejection)
	}
	deleted, ok := message.(*PageDeletedMessage)
	if !ok || deleted.JobID != 12399 || deleted.URL != "https://docs.example.com/a" {
		t.Fatalf("decoded %+v", message)
	}
	instance, _ := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err := compile(t, "page_deleted").Validate(instance); err != nil {
		t.Fatalf("schema: %v", err)
	}
}

func TestAGzipBombIsRefusedWithinTheCap(t *testing.T) {
	var compressed bytes.Buffer
	writer := gzip.NewWriter(&compressed)
	zeros := make([]byte, 1<<20)
	for i := 0; i < 64; i++ { // 64 MiB of zeros, about 64 KiB compressed
		writer.Write(zeros)
	}
	writer.Close()
	_, err := DecodeHTML(base64.StdEncoding.EncodeToString(compressed.Bytes()), "gzip+base64",
		1<<20)
	rejection, ok := err.(*Rejection)
	if !ok || rejection.Code != TooLarge {
		t.Fatalf("got %v, want %s", err, TooLarge)
	}
}
