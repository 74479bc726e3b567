package kafkaclient

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The shared vectors: which partition a key lands on, for the partition counts the
// deployments use. tests/test_kafka_parity.py checks the same file against the Python
// producer on a real broker. Regenerate (only when the partitioner changes on purpose):
// WRITE_PARTITION_VECTORS=1 go test ./kafkaclient
type vector struct {
	Key        string `json:"key"`
	Partitions int    `json:"partitions"`
	Partition  int    `json:"partition"`
}

var vectorsPath = filepath.Join("..", "..", "contract", "vectors", "partitions.json")

func vectorKeys() []string {
	keys := []string{"pg-docs", "a", "0", "collection_with_underscores", "Z-9"}
	for i := 0; i < 20; i++ {
		keys = append(keys, fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", 0x9e3779b9*(i+1)&0xffffffff,
			i*7919&0xffff, i*31&0xfff, i*17&0xfff, int64(i+1)*0x5deece66d))
	}
	return keys
}

func TestPartitionVectors(t *testing.T) {
	if os.Getenv("WRITE_PARTITION_VECTORS") != "" {
		var out []vector
		for _, n := range []int{1, 3, 12, 24} {
			for _, key := range vectorKeys() {
				out = append(out, vector{key, n, Partition([]byte(key), n)})
			}
		}
		data, _ := json.MarshalIndent(out, "", " ")
		if err := os.WriteFile(vectorsPath, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var vectors []vector
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	spread := map[int]bool{}
	for _, v := range vectors {
		if got := Partition([]byte(v.Key), v.Partitions); got != v.Partition {
			t.Errorf("key %q over %d partitions: %d, the vectors say %d", v.Key, v.Partitions, got, v.Partition)
		}
		if v.Partitions == 12 {
			spread[v.Partition] = true
		}
	}
	if len(vectors) == 0 || len(spread) < 6 {
		t.Fatalf("the vectors should spread keys over the partitions: %d vectors, %d partitions of 12 used", len(vectors), len(spread))
	}
}

func TestOptionsRefuseWhatTheyCannotUse(t *testing.T) {
	cases := []Options{
		{Brokers: "b:9092", SecurityProtocol: "SASL_SSL", SASLMechanism: "PLAIN"},
		{Brokers: "b:9092", SecurityProtocol: "SASL_PLAINTEXT", SASLMechanism: "GSSAPI", SASLUsername: "u", SASLPassword: "p"},
		{Brokers: "b:9092", SecurityProtocol: "TLS"},
		{Brokers: "b:9092", SecurityProtocol: "SSL", SSLCALocation: "/nonexistent/ca.pem"},
	}
	for _, o := range cases {
		if _, err := ClientOptions(o); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
	for _, mechanism := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		o := Options{Brokers: "b:9092", SecurityProtocol: "SASL_SSL", SASLMechanism: mechanism, SASLUsername: "u", SASLPassword: "p"}
		if _, err := ClientOptions(o); err != nil {
			t.Errorf("%s: %v", mechanism, err)
		}
	}
}
