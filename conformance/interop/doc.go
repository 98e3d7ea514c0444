// Package interop checks toolgate against MCP software this project did not
// write: the TypeScript SDK's client through the gateway, and the official
// MCP conformance suite against go-sdk's everything-server, directly and
// through the gateway, for the session-based protocol and for 2026-07-28.
//
// The package is tests only. They need Node.js 22 and the npm packages that
// package-lock.json pins, which hack/node.sh installs into a cache outside
// the repository; see README.md.
package interop
