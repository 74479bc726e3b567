// Command producer publishes a folder of HTML pages to Kafka the way the Go crawler does:
// a new indexing request gets a collection_id (a UUID, as CreateIndexingRequest makes it),
// and every page becomes one indexing_jobs message (gzip+base64 HTML), keyed by that
// collection_id, with a pure-Go Kafka client. After the last page it says the crawl is
// complete (a crawl_completed message with the page count, same key: same partition, after
// the pages), unless -complete=false. With -delete URL (repeatable) it removes those pages
// from -collection instead (page_deleted messages, same key: ordered with its pages).
//
//	producer -brokers 127.0.0.1:9092 -dir ./site -base-url https://docs.example.com [-alias pg-docs]
//	producer -brokers 127.0.0.1:9092 -collection <id> -delete https://docs.example.com/a.html
//
// It prints the collection_id and the job_ids as JSON on stdout, so a caller can follow
// them; messages are produced with acks=all and each delivery is confirmed. Security
// options come from KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
// KAFKA_SASL_PASSWORD and KAFKA_SSL_CA_LOCATION, as on the Python side.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/rag-pipeline/rag-pipeline/go/contract"
	"github.com/rag-pipeline/rag-pipeline/go/kafkaclient"
)

type result struct {
	CollectionID string  `json:"collection_id"`
	Alias        *string `json:"alias,omitempty"`
	RequestID    uint    `json:"request_id"`
	Topic        string  `json:"topic"`
	JobIDs       []uint  `json:"job_ids"`
	Completed    bool    `json:"completed"` // a crawl_completed message followed the pages
}

type options struct {
	brokers, topic, dir, baseURL, collection, alias string
	requestID, firstJobID                           uint
	complete                                        bool
	deletes                                         []string
}

// urls is a repeatable flag.
type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, s); return nil }

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "Kafka bootstrap servers, host:port[,host:port]")
	topic := flag.String("topic", "indexing_jobs", "topic the crawler publishes to")
	dir := flag.String("dir", "", "folder of .html files, one page each (required)")
	baseURL := flag.String("base-url", "https://docs.example.com", "URL prefix of the pages")
	collection := flag.String("collection", "", "collection_id (default: a new UUID)")
	requestID := flag.Uint("request-id", 0, "crawl request id (default: from the clock)")
	firstJobID := flag.Uint("first-job-id", 0, "job_id of the first page, then +1 (default: from the clock)")
	alias := flag.String("alias", "", "the collection's alias, e.g. pg-docs (default: none)")
	complete := flag.Bool("complete", true, "say the crawl is complete after the last page")
	var deletes urls
	flag.Var(&deletes, "delete", "remove the page at this URL from -collection (repeatable; no -dir)")
	flag.Parse()
	if err := run(options{*brokers, *topic, *dir, *baseURL, *collection, *alias, *requestID,
		*firstJobID, *complete, deletes}); err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(2)
	}
}

func run(o options) error {
	brokers, topic, dir, collection := o.brokers, o.topic, o.dir, o.collection
	requestID, firstJobID := o.requestID, o.firstJobID
	if len(o.deletes) > 0 {
		return deletePages(o)
	}
	if dir == "" {
		return errors.New("-dir is required: a folder of .html files")
	}
	pages, err := htmlFiles(dir)
	if err != nil {
		return err
	}
	if len(pages) == 0 {
		return fmt.Errorf("no .html file in %s", dir)
	}
	if collection == "" {
		collection = uuid.New().String()
	} else if !contract.CollectionIDPattern.MatchString(collection) {
		return fmt.Errorf("-collection %q: use a UUID or 1-64 of A-Z a-z 0-9 _ -", collection)
	}
	alias, err := aliasOption(o.alias)
	if err != nil {
		return err
	}
	now := uint(time.Now().UnixMicro())
	if requestID == 0 {
		requestID = now / 1_000_000
	}
	if firstJobID == 0 {
		firstJobID = now
	}
	request := contract.CrawlRequest{RequestID: requestID, ProjectID: 1, UserID: "go-producer",
		CollectionID: collection, Alias: alias, BaseURL: strings.TrimRight(o.baseURL, "/")}

	client, err := newClient(brokers)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out := result{CollectionID: collection, Alias: alias, RequestID: requestID, Topic: topic}
	var records []*kgo.Record
	for i, path := range pages {
		html, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		relative, _ := filepath.Rel(dir, path)
		jobID := firstJobID + uint(i)
		message := contract.NewJobMessage(jobID, request, contract.Page{
			URL:   request.BaseURL + "/" + filepath.ToSlash(relative),
			Depth: 1, ParentURL: request.BaseURL, HTML: html,
			Title: strings.TrimSuffix(filepath.Base(path), ".html")})
		value, err := json.Marshal(message)
		if err != nil {
			return err
		}
		if _, rejection := contract.Validate(value, contract.DefaultLimits); rejection != nil {
			return fmt.Errorf("%s would be refused by the pipeline: %v", path, rejection)
		}
		records = append(records, &kgo.Record{Topic: topic, Key: []byte(collection), Value: value})
		out.JobIDs = append(out.JobIDs, jobID)
	}
	if err := client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return fmt.Errorf("publishing to %s at %s: %w", topic, brokers, err)
	}
	if o.complete { // only once every page is confirmed: it must follow them
		value, err := json.Marshal(contract.NewCrawlCompleted(request, len(records), time.Now()))
		if err != nil {
			return err
		}
		record := &kgo.Record{Topic: topic, Key: []byte(collection), Value: value}
		if err := client.ProduceSync(ctx, record).FirstErr(); err != nil {
			return fmt.Errorf("saying the crawl is complete on %s: %w", topic, err)
		}
		out.Completed = true
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// deletePages publishes one page_deleted message per -delete URL, keyed by the collection.
func deletePages(o options) error {
	if !contract.CollectionIDPattern.MatchString(o.collection) {
		return fmt.Errorf("-delete needs -collection: the collection_id the pages are removed from")
	}
	alias, err := aliasOption(o.alias)
	if err != nil {
		return err
	}
	now := uint(time.Now().UnixMicro())
	request := contract.CrawlRequest{RequestID: o.requestID, CollectionID: o.collection,
		Alias: alias}
	if request.RequestID == 0 {
		request.RequestID = now / 1_000_000
	}
	firstJobID := o.firstJobID
	if firstJobID == 0 {
		firstJobID = now
	}
	out := result{CollectionID: o.collection, Alias: alias, RequestID: request.RequestID,
		Topic: o.topic}
	var records []*kgo.Record
	for i, url := range o.deletes {
		jobID := firstJobID + uint(i)
		value, err := json.Marshal(contract.NewPageDeleted(uint64(jobID), request, url))
		if err != nil {
			return err
		}
		if _, rejection := contract.Decode(value, contract.DefaultLimits); rejection != nil {
			return fmt.Errorf("-delete %q would be refused by the pipeline: %v", url, rejection)
		}
		records = append(records, &kgo.Record{Topic: o.topic, Key: []byte(o.collection),
			Value: value})
		out.JobIDs = append(out.JobIDs, jobID)
	}
	client, err := newClient(o.brokers)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return fmt.Errorf("publishing to %s at %s: %w", o.topic, o.brokers, err)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func aliasOption(alias string) (*string, error) {
	if alias == "" {
		return nil, nil
	}
	if err := contract.CheckAlias(alias); err != nil {
		return nil, fmt.Errorf("-alias %q: %v", alias, err)
	}
	return &alias, nil
}

// newClient reads the security options from the variables the Python side reads
// (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CA_LOCATION).
func newClient(brokers string) (*kgo.Client, error) {
	return kafkaclient.NewClient(kafkaclient.FromEnv(brokers))
}

func htmlFiles(dir string) ([]string, error) {
	var pages []string
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !entry.IsDir() && strings.EqualFold(filepath.Ext(path), ".html") {
			pages = append(pages, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	sort.Strings(pages)
	return pages, nil
}
