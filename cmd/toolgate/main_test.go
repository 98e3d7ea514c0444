package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommandsExplainWhatToChange(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	// An API server address nothing listens on.
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
		wantOut string
	}{
		{name: "no command", args: nil, wantErr: "a command is required", wantOut: "Usage:"},
		{name: "an unknown command", args: []string{"serve"}, wantErr: `unknown command "serve"`, wantOut: "toolgate standalone --config DIR"},
		{name: "version", args: []string{"version"}, wantOut: "toolgate "},
		{name: "help", args: []string{"--help"}, wantOut: "toolgate proxy --gateway NAMESPACE/NAME"},
		{name: "controller help", args: []string{"controller", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "-proxy-image"},
		{name: "proxy help", args: []string{"proxy", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "-redis-url"},
		{name: "standalone help", args: []string{"standalone", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "-listen-address"},
		{name: "a bad flag", args: []string{"standalone", "--listen", "x"}, wantErr: "flag provided but not defined: -listen"},
		{name: "standalone without --config", args: []string{"standalone"}, wantErr: "--config DIR is required"},
		{name: "standalone with a missing folder", args: []string{"standalone", "--config", filepath.Join(dir, "nowhere")}, wantErr: "not a readable folder"},
		{name: "standalone with a host name to listen on", args: []string{"standalone", "--config", dir, "--listen-address", "localhost"}, wantErr: "give an IP address"},
		{name: "a bad Redis URL", args: []string{"standalone", "--config", dir, "--redis-url", "http://redis:6379", "--admin-address", ""}, wantErr: "--redis-url"},
		{name: "proxy help shows the trusted hops", args: []string{"proxy", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "-trusted-hops"},
		{name: "controller help warns about localhost endpoints", args: []string{"controller", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "never in a cluster"},
		{name: "proxy help names the config stream", args: []string{"proxy", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "-controller-tls-dir"},
		{name: "standalone help shows the trusted hops", args: []string{"standalone", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "-trusted-hops"},
		{name: "a negative number of trusted hops in standalone mode", args: []string{"standalone", "--config", dir, "--trusted-hops", "-1"}, wantErr: "--trusted-hops -1"},
		{name: "a negative number of trusted hops in proxy mode", args: []string{"proxy", "--gateway", "a/b", "--controller", "https://c:9443", "--trusted-hops", "-1"}, wantErr: "--trusted-hops -1"},
		{name: "proxy without the controller", args: []string{"proxy", "--gateway", "a/b"}, wantErr: "--controller is required"},
		{name: "proxy with a host name to listen on", args: []string{"proxy", "--gateway", "a/b", "--controller", "https://c:9443", "--listen-address", "localhost"}, wantErr: "give an IP address"},
		{name: "controller with a config stream URL that is not https", args: []string{"controller", "--config-stream-url", "http://c:9443"}, wantErr: "give an https:// URL"},
		{name: "proxy without a gateway", args: []string{"proxy"}, wantErr: "--gateway must be NAMESPACE/NAME"},
		{name: "an unreachable API server", args: []string{"controller", "--kubeconfig", kubeconfig}, wantErr: "cannot reach the API server at https://127.0.0.1:1"},
		{name: "a bad service type", args: []string{"controller", "--proxy-service-type", "Ingress"}, wantErr: "use LoadBalancer, NodePort or ClusterIP"},
		{name: "a bad log level", args: []string{"controller", "--log-level", "loud"}, wantErr: "use debug, info, warn or error"},
		{name: "controller with a Redis address without a port", args: []string{"controller", "--redis-addrs", "sentinel-0:26379,sentinel-1"}, wantErr: `invalid value "sentinel-0:26379,sentinel-1" for flag -redis-addrs: "sentinel-1" is not HOST:PORT`},
		{name: "controller with a Redis URL and addresses", args: []string{"controller", "--redis-url", "redis://r:6379", "--redis-addrs", "r-0:6379"}, wantErr: "set --redis-url or --redis-addrs, not both"},
		{name: "controller with a Sentinel master name and no addresses", args: []string{"controller", "--redis-master-name", "mymaster"}, wantErr: "--redis-master-name needs the Sentinels' HOST:PORT in --redis-addrs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(tt.args, &stdout, &stderr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				if !(errors.Is(err, flag.ErrHelp) && tt.wantErr == flag.ErrHelp.Error()) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tt.wantOut) {
				t.Errorf("output %q does not contain %q", out, tt.wantOut)
			}
		})
	}
}
