package statushandler_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rag-pipeline/rag-pipeline/go/statushandler"
)

// The backend's tables as GORM made them before the pipeline's changes (the seed's models).
type seedIndexingRequest struct {
	ID            uint   `gorm:"primaryKey"`
	UserID        string `gorm:"not null"`
	Endpoint      string `gorm:"type:varchar(255);not null"`
	TotalJobs     int    `gorm:"not null"`
	CompletedJobs int    `gorm:"not null"`
	ProjectID     uint   `gorm:"not null"`
	Status        string `gorm:"type:varchar(50);not null"`
	ErrorMsg      string `gorm:"type:text"`
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

func (seedIndexingRequest) TableName() string { return "indexing_requests" }

type seedIndexingJob struct {
	ID        uint   `gorm:"primaryKey"`
	RequestID uint   `gorm:"not null;index"`
	URL       string `gorm:"type:text;not null"`
	Status    string `gorm:"type:varchar(50);not null"`
	ErrorMsg  string `gorm:"type:text"`
	CreatedAt time.Time
	UpdatedAt time.Time
}

func (seedIndexingJob) TableName() string { return "indexing_jobs" }

// shape: every column (type, length, nullability, default) and index of the two tables.
func shape(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var columns []string
	rows, err := db.Raw("SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || " +
		"coalesce(character_maximum_length::text, '-') || ' ' || is_nullable || ' ' || " +
		"coalesce(column_default, '-') FROM information_schema.columns " +
		"WHERE table_schema = current_schema() AND table_name IN " +
		"('indexing_requests', 'indexing_jobs') AND column_name <> 'id' " +
		"UNION ALL SELECT 'index ' || indexname FROM pg_indexes " +
		"WHERE schemaname = current_schema() AND indexname NOT LIKE '%pkey'").Rows()
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		rows.Scan(&line)
		columns = append(columns, line)
	}
	sort.Strings(columns)
	return columns
}

// The SQL migrations in go/migrations take the seed's tables, with rows, to exactly what
// AutoMigrate makes of the models; AutoMigrate then finds nothing to change.
func TestTheMigrationsBringTheSeedTablesToWhatAutoMigrateMakes(t *testing.T) {
	wanted := shape(t, database(t))
	db := emptySchema(t)
	if err := db.AutoMigrate(&seedIndexingRequest{}, &seedIndexingJob{}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		request := seedIndexingRequest{UserID: "u", Endpoint: "https://docs.example.com",
			TotalJobs: 2, ProjectID: 1, Status: "crawling"}
		db.Create(&request)
		db.Create(&seedIndexingJob{RequestID: request.ID, URL: fmt.Sprint(i), Status: "pending"})
	}
	ups, _ := filepath.Glob(filepath.Join("..", "migrations", "*.up.sql"))
	if len(ups) < 2 {
		t.Fatalf("the migrations are missing: %v", ups)
	}
	sort.Strings(ups)
	for _, path := range ups {
		sql, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // each is idempotent
			if err := db.Exec(string(sql)).Error; err != nil {
				t.Fatalf("%s: %v", filepath.Base(path), err)
			}
		}
	}
	if got := shape(t, db); !reflect.DeepEqual(got, wanted) {
		t.Fatalf("after the migrations:\n%v\nAutoMigrate makes:\n%v", got, wanted)
	}
	if err := db.AutoMigrate(statushandler.Models()...); err != nil {
		t.Fatal(err)
	}
	if got := shape(t, db); !reflect.DeepEqual(got, wanted) {
		t.Fatalf("AutoMigrate changed the migrated tables:\n%v\nwant:\n%v", got, wanted)
	}
	var failed []int
	db.Raw("SELECT failed_jobs FROM indexing_requests").Scan(&failed)
	if len(failed) != 3 || failed[0] != 0 {
		t.Fatalf("existing requests' failed_jobs: %v", failed)
	}
}
