package audit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter/audit"
)

// syncBuffer is a writer tests read after Close.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func count(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == audit.MetricRecords && m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestRecordsAreWrittenOnePerLine(t *testing.T) {
	reg := prometheus.NewRegistry()
	var out syncBuffer
	l, err := audit.New(&out, audit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		l.Record(audit.Record{Server: "ns/s", HTTPMethod: "POST", Method: "tools/call", Name: "t", ID: json.RawMessage([]byte{'0' + byte(i%10)}), Decision: audit.Allowed, Status: 200})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := 0
	sc := bufio.NewScanner(&out.b)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Server != "ns/s" || r.Decision != audit.Allowed {
			t.Fatalf("line %d: %v: %s", lines, err, sc.Bytes())
		}
		lines++
	}
	if lines != 100 || count(t, reg, "written") != 100 {
		t.Errorf("%d lines, %v counted written; want 100", lines, count(t, reg, "written"))
	}
	l.Record(audit.Record{Server: "ns/s"})
	if count(t, reg, "dropped") != 1 {
		t.Errorf("a record after Close was not counted as dropped")
	}
}

// blockedWriter holds every write until released.
type blockedWriter struct {
	release chan struct{}
	syncBuffer
}

func (b *blockedWriter) Write(p []byte) (int, error) {
	<-b.release
	return b.syncBuffer.Write(p)
}

// A writer that does not keep up never blocks Record: what the queue cannot
// hold is dropped and counted, and everything is either written or counted
// dropped.
func TestAFullQueueDropsAndCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := &blockedWriter{release: make(chan struct{})}
	l, err := audit.New(w, audit.Options{QueueSize: 4, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	big := string(bytes.Repeat([]byte("x"), 70<<10)) // past the buffer: the writer blocks on the first
	for range n {
		l.Record(audit.Record{Server: "ns/s", Name: big})
	}
	dropped := count(t, reg, "dropped")
	if dropped < n-6 { // the queue (4), the record being written, and one more taken
		t.Errorf("%v dropped of %d with a queue of 4 and a stuck writer", dropped, n)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if written := count(t, reg, "written"); written+dropped != n {
		t.Errorf("written %v + dropped %v != %d", written, dropped, n)
	}
	if lines := bytes.Count(w.b.Bytes(), []byte("\n")); float64(lines) != count(t, reg, "written") {
		t.Errorf("%d lines, %v counted written", lines, count(t, reg, "written"))
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRecordsThatCannotBeWrittenAreCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := audit.New(failingWriter{}, audit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		l.Record(audit.Record{Server: "ns/s"})
	}
	_ = l.Close()
	if failed := count(t, reg, "failed"); failed != 10 {
		t.Errorf("failed = %v, want 10", failed)
	}
	if written := count(t, reg, "written"); written != 0 {
		t.Errorf("written = %v, want 0", written)
	}
}
