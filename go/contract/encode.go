package contract

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"
)

var gzipMagic = []byte{0x1f, 0x8b}

// EncodePage encodes a page's HTML as the crawler does: gzip, then standard base64
// (content.encoding "gzip+base64").
func EncodePage(html []byte) string {
	var compressed bytes.Buffer
	writer := gzip.NewWriter(&compressed)
	writer.Write(html) // writes to a bytes.Buffer cannot fail
	writer.Close()
	return base64.StdEncoding.EncodeToString(compressed.Bytes())
}

// Page is what the crawler knows of one page of a crawl request.
type Page struct {
	URL          string
	ParentURL    string
	Depth        int
	HTML         []byte
	Text         string
	Title        string
	DiscoveredAt time.Time
}

// NewJobMessage builds the indexing_jobs message of one crawled page.
func NewJobMessage(jobID uint, request CrawlRequest, page Page) IndexingJobMessage {
	var parent *string
	if page.ParentURL != "" {
		parent = &page.ParentURL
	}
	discovered := page.DiscoveredAt
	if discovered.IsZero() {
		discovered = time.Now().UTC()
	}
	return IndexingJobMessage{
		JobID: jobID, RequestID: request.RequestID, ProjectID: request.ProjectID,
		UserID: request.UserID, CollectionID: request.CollectionID, Alias: request.Alias,
		URL:   page.URL,
		Depth: page.Depth, ParentURL: parent, DiscoveredAt: discovered,
		Content: Content{HTML: EncodePage(page.HTML), Text: page.Text, Title: page.Title,
			ContentType: "text/html", Encoding: "gzip+base64"},
		Metadata: Metadata{BaseURL: request.BaseURL,
			CrawlSessionID: fmt.Sprintf("crawl_%d", request.RequestID)},
	}
}

// DecodeHTML returns the size of content.html once decoded, refusing more than maxBytes
// (a gzip bomb fails fast) with the pipeline's reason codes (rag_pipeline/decoding.py).
func DecodeHTML(html, encoding string, maxBytes int) (int, error) {
	var raw []byte
	switch encoding {
	case "identity":
		raw = []byte(html)
	case "base64", "gzip+base64":
		decoded, err := StrictBase64(html)
		if err != nil {
			return 0, &Rejection{Code: BadBase64,
				Message: fmt.Sprintf("content.html is not valid base64 (%v)", err)}
		}
		if encoding == "base64" {
			raw = decoded
			break
		}
		if !bytes.HasPrefix(decoded, gzipMagic) {
			return 0, &Rejection{Code: BadGzip, Message: "content.html is base64 but not gzip data"}
		}
		return gunzipSize(decoded, maxBytes)
	default:
		return 0, &Rejection{Code: UnsupportedEncoding,
			Message: fmt.Sprintf("content.encoding %q is not supported", encoding)}
	}
	if len(raw) > maxBytes {
		return 0, &Rejection{Code: TooLarge, Message: fmt.Sprintf(
			"content.html is %d bytes, above the %d byte limit", len(raw), maxBytes)}
	}
	return len(raw), nil
}

// gunzipSize: the decompressed size of one or more gzip members, nothing after them.
func gunzipSize(data []byte, maxBytes int) (int, error) {
	source := bufio.NewReader(bytes.NewReader(data))
	reader, err := gzip.NewReader(source)
	if err != nil {
		return 0, &Rejection{Code: BadGzip, Message: "content.html is not valid gzip data"}
	}
	total := 0
	for {
		reader.Multistream(false)
		n, err := io.Copy(io.Discard, io.LimitReader(reader, int64(maxBytes-total)+1))
		total += int(n)
		if total > maxBytes {
			return 0, &Rejection{Code: TooLarge, Message: fmt.Sprintf(
				"content.html expands beyond the %d byte limit (MAX_PAYLOAD_BYTES)", maxBytes)}
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, &Rejection{Code: BadGzip, Message: "content.html is truncated gzip data"}
			}
			return 0, &Rejection{Code: BadGzip,
				Message: fmt.Sprintf("content.html is not valid gzip data (%v)", err)}
		}
		rest, _ := source.Peek(2)
		if len(rest) == 0 {
			return total, nil
		}
		if !bytes.Equal(rest, gzipMagic) {
			return 0, &Rejection{Code: BadGzip,
				Message: "content.html has garbage after the gzip data"}
		}
		if err := reader.Reset(source); err != nil { // the next member
			return 0, &Rejection{Code: BadGzip, Message: "content.html is not valid gzip data"}
		}
	}
}
