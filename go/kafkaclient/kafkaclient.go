// Package kafkaclient is how the Go side produces to the pipeline's topics: the same
// security options as the Python side (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM,
// KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION) and the same partitioner
// (Kafka's murmur2 of the key), so a collection's messages land on one partition whichever
// side produced them (contract/vectors/partitions.json proves it on both sides).
package kafkaclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Options mirror the Python settings of the same names.
type Options struct {
	Brokers          string
	SecurityProtocol string // PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
	SASLMechanism    string // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	SASLUsername     string
	SASLPassword     string
	SSLCALocation    string // PEM file; empty: the system's roots
}

// FromEnv reads the options from the variables the Python side reads.
func FromEnv(brokers string) Options {
	protocol := os.Getenv("KAFKA_SECURITY_PROTOCOL")
	if protocol == "" {
		protocol = "PLAINTEXT"
	}
	mechanism := os.Getenv("KAFKA_SASL_MECHANISM")
	if mechanism == "" {
		mechanism = "PLAIN"
	}
	return Options{Brokers: brokers, SecurityProtocol: protocol, SASLMechanism: mechanism,
		SASLUsername: os.Getenv("KAFKA_SASL_USERNAME"), SASLPassword: os.Getenv("KAFKA_SASL_PASSWORD"),
		SSLCALocation: os.Getenv("KAFKA_SSL_CA_LOCATION")}
}

// Partitioner is the one both sides use: murmur2 of the key, as Kafka's Java client and
// librdkafka's murmur2_random (records without a key go to a sticky random partition).
func Partitioner() kgo.Partitioner { return kgo.StickyKeyPartitioner(nil) }

// Partition is where a record with this key lands in a topic of n partitions.
func Partition(key []byte, n int) int {
	return Partitioner().ForTopic("").Partition(&kgo.Record{Key: key}, n)
}

// ClientOptions are kgo options for these settings; an error names the setting at fault.
func ClientOptions(o Options) ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(strings.Split(o.Brokers, ",")...),
		kgo.RecordPartitioner(Partitioner()), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchMaxBytes(16 << 20), kgo.ProduceRequestTimeout(30 * time.Second)}
	protocol := strings.ToUpper(o.SecurityProtocol)
	switch protocol {
	case "", "PLAINTEXT":
	case "SSL", "SASL_SSL", "SASL_PLAINTEXT":
	default:
		return nil, fmt.Errorf("KAFKA_SECURITY_PROTOCOL %q: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", o.SecurityProtocol)
	}
	if strings.HasSuffix(protocol, "SSL") {
		config := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.SSLCALocation != "" {
			pem, err := os.ReadFile(o.SSLCALocation)
			if err != nil {
				return nil, fmt.Errorf("KAFKA_SSL_CA_LOCATION: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("KAFKA_SSL_CA_LOCATION %s holds no PEM certificate", o.SSLCALocation)
			}
			config.RootCAs = pool
		}
		opts = append(opts, kgo.DialTLSConfig(config))
	}
	if strings.HasPrefix(protocol, "SASL_") {
		if o.SASLUsername == "" || o.SASLPassword == "" {
			return nil, fmt.Errorf("%s needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD", protocol)
		}
		switch strings.ToUpper(o.SASLMechanism) {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: o.SASLUsername, Pass: o.SASLPassword}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: o.SASLUsername, Pass: o.SASLPassword}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: o.SASLUsername, Pass: o.SASLPassword}.AsSha512Mechanism()))
		default:
			return nil, fmt.Errorf("KAFKA_SASL_MECHANISM %q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", o.SASLMechanism)
		}
	}
	return opts, nil
}

// NewClient is a producing client for these options.
func NewClient(o Options) (*kgo.Client, error) {
	opts, err := ClientOptions(o)
	if err != nil {
		return nil, err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("Kafka client for %s: %w", o.Brokers, err)
	}
	return client, nil
}
