package testport

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

func TestReservedPortsAreDistinctOutsideTheEphemeralRangeAndBindable(t *testing.T) {
	a, err := Reserve("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseAll(a)
	b, err := Reserve("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseAll(b)
	seen := map[int]bool{}
	for _, p := range append(append([]*Port(nil), a...), b...) {
		if seen[p.Number] {
			t.Fatalf("port %d reserved twice: %v and %v", p.Number, Numbers(a), Numbers(b))
		}
		seen[p.Number] = true
		if p.Number < first || p.Number > last {
			t.Errorf("port %d is outside %d-%d", p.Number, first, last)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Number)))
		if err != nil {
			t.Errorf("a reserved port cannot be bound: %v", err)
			continue
		}
		_ = l.Close()
	}
}

// Another test process cannot reserve a port this one holds, and can once
// it is released.
func TestAnotherProcessCannotReserveAHeldPort(t *testing.T) {
	if os.Getenv("TESTPORT_CHILD") != "" {
		number, _ := strconv.Atoi(os.Getenv("TESTPORT_CHILD"))
		port, err := reserve(dirForTest(t), "127.0.0.1", number)
		if err != nil {
			t.Fatal(err)
		}
		if port == nil {
			os.Exit(3) // held elsewhere
		}
		os.Exit(0)
	}
	ports, err := Reserve("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := func() int {
		cmd := exec.Command(self, "-test.run=^TestAnotherProcessCannotReserveAHeldPort$")
		cmd.Env = append(os.Environ(), "TESTPORT_CHILD="+strconv.Itoa(ports[0].Number))
		err := cmd.Run()
		if exit, ok := err.(*exec.ExitError); ok {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	if code := child(); code != 3 {
		t.Fatalf("another process reserving held port %d exited %d, want 3 (held)", ports[0].Number, code)
	}
	ports[0].Release()
	if code := child(); code != 0 {
		t.Fatalf("another process reserving released port %d exited %d, want 0 (reserved)", ports[0].Number, code)
	}
}

// A port something listens on is not reserved.
func TestAPortInUseIsNotReserved(t *testing.T) {
	ports, err := Reserve("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	number := ports[0].Number
	ports[0].Release()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(number)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port, err := reserve(dirForTest(t), "127.0.0.1", number)
	if err != nil {
		t.Fatal(err)
	}
	if port != nil {
		port.Release()
		t.Fatalf("port %d was reserved while something listened on it", number)
	}
}

func dirForTest(t *testing.T) string {
	t.Helper()
	dir, err := lockDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func releaseAll(ports []*Port) {
	for _, p := range ports {
		p.Release()
	}
}
