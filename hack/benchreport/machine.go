package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine is the machine a run measured, and the run itself: make bench
// writes it (benchreport machine) before the first benchmark starts.
type Machine struct {
	Started     time.Time
	Quick       bool   // BENCH_QUICK=1: small sizes, for development
	Commit      string // of the checkout measured; -dirty when tracked files differed
	CPU         string // model name
	Cores       int    // logical CPUs
	MemoryMiB   int
	Virtual     bool // the CPU says it runs under a hypervisor
	OS          string
	Kernel      string
	LoadAverage string // the 1, 5 and 15 minute load averages at the start
	Go          string
	Redis       string
	Nginx       string
}

// collectMachine describes this machine from /proc, /etc/os-release and
// the versions the programs report; what it cannot read stays empty.
func collectMachine(quick bool) Machine {
	m := Machine{Started: time.Now().UTC().Truncate(time.Second), Quick: quick, Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU, m.Virtual = parseCPUInfo(b)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryMiB = parseMemTotalMiB(b)
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		m.OS = parseOSRelease(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	m.Redis = versionOf(`v=(\S+)`, "redis-server", "--version")
	m.Nginx = versionOf(`nginx/(\S+)`, "nginx", "-v")
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if exec.Command("git", "diff", "--quiet", "HEAD").Run() != nil {
			m.Commit += "-dirty"
		}
	}
	return m
}

// parseCPUInfo returns the first model name of /proc/cpuinfo and whether
// its flags name a hypervisor.
func parseCPUInfo(b []byte) (model string, virtual bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch {
		case key == "model name" && model == "":
			model = value
		case key == "flags" && !virtual:
			virtual = strings.Contains(" "+value+" ", " hypervisor ")
		}
	}
	return model, virtual
}

// parseMemTotalMiB reads MemTotal of /proc/meminfo.
func parseMemTotalMiB(b []byte) int {
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err == nil {
				return kib / 1024
			}
		}
	}
	return 0
}

// parseOSRelease reads PRETTY_NAME of /etc/os-release.
func parseOSRelease(b []byte) string {
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME="); ok {
			return strings.Trim(rest, `"'`)
		}
	}
	return ""
}

// versionOf runs a program that prints its version, and returns the first
// group of pattern in its output (nginx prints on stderr), or "" when the
// program is missing.
func versionOf(pattern string, program string, args ...string) string {
	out, err := exec.Command(program, args...).CombinedOutput()
	if err != nil {
		return ""
	}
	if m := regexp.MustCompile(pattern).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return fmt.Sprintf("%.40s", strings.TrimSpace(string(out)))
}
