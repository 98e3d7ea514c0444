// Package gatewayapi runs the upstream Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, GATEWAY-HTTP profile) against toolgate
// deployed in a real cluster, and writes the official ConformanceReport to
// conformance/reports. Its test is behind the build tag gatewayapi: it needs
// a cluster and never runs in a plain go test ./... (see README.md).
package gatewayapi
