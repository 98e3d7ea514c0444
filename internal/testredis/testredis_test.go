package testredis

import (
	"errors"
	"io/fs"
	"os"
	"testing"
)

func TestCloseStopsEveryProcessAndRemovesItsFiles(t *testing.T) {
	tests := []struct {
		name  string
		start func() (servers []*Server, close func() error, err error)
	}{
		{"a server", func() ([]*Server, func() error, error) {
			s, err := Start()
			if err != nil {
				return nil, nil, err
			}
			return []*Server{s}, s.Close, nil
		}},
		{"a sentinel deployment", func() ([]*Server, func() error, error) {
			s, err := StartSentinel()
			if err != nil {
				return nil, nil, err
			}
			return append([]*Server{s.Master, s.Replica}, s.Sentinels...), s.Close, nil
		}},
		{"a cluster", func() ([]*Server, func() error, error) {
			c, err := StartCluster()
			if err != nil {
				return nil, nil, err
			}
			return c.Nodes, c.Close, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			servers, closeDeployment, err := tt.start()
			if err != nil {
				t.Fatal(err)
			}
			type process struct {
				addr, dir string
				pid       int
			}
			var started []process
			for _, s := range servers {
				pid := s.cmd.Process.Pid
				if err := isProcess(s.Addr(), pid); err != nil {
					t.Errorf("%s on %s: %v", s.program, s.Addr(), err)
				}
				started = append(started, process{s.Addr(), s.dir, pid})
			}
			if err := closeDeployment(); err != nil {
				t.Errorf("Close: %v", err)
			}
			for _, p := range started {
				if _, err := command(p.addr, "PING"); err == nil {
					t.Errorf("%s still answers after Close", p.addr)
				}
				if _, err := os.Stat(p.dir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s's directory %s is still there after Close (%v)", p.addr, p.dir, err)
				}
			}
		})
	}
}
