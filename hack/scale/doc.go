// Package scale measures the controller at scale on the real API server
// (envtest): 200 Gateways, 1,000 HTTPRoutes, 1,000 MCPServers and their
// Services, then 5,000 unrelated Secrets of 1 KiB and 20,000 unrelated
// EndpointSlices with churn, with 100 config-stream clients connected as
// proxies would be. It reports the controller's memory, its CPU per event,
// the time from an HTTPRoute edit to the new snapshot at every client of
// its Gateway, and its API requests at rest. `make bench-controller` runs
// it; `make test` does not (it takes minutes).
//
// The controller is the toolgate binary built from this checkout, running
// as the ServiceAccount of config/rbac, as in a cluster; its requests are
// read from the API server's audit log.
package scale
