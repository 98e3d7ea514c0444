package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate/filter/authz"
)

// Filtered lists. With authorization, the results of tools/list,
// prompts/list, resources/list and resources/templates/list show each
// caller only what a call would not answer as unknown (authz.Lister). The
// filter rewrites the responses that can carry them: those to a POST that
// holds a list request, and every GET event stream (a resumed stream
// replays responses, and the legacy SSE transport sends them all there).
// Any JSON-RPC response there whose result has a tools, prompts, resources
// or resourceTemplates array gets the array filtered, whichever id it
// answers; everything else passes byte for byte. Cursors pass untouched:
// each page is filtered on its own. A filtered result that says how widely
// it may be cached (MCP 2026-07-28's cacheScope) is marked private: another
// caller may see another list.
//
// What cannot be read is not forwarded: a JSON body past
// maxListResponseBytes or that is not JSON gets 502; an event stream that
// sends such an event is cut.

// maxListResponseBytes bounds a JSON response, or one event of a stream,
// that the filter reads to filter a list.
const maxListResponseBytes = 32 << 20

// listKind is one kind of listed item: the result key that holds them, the
// method that uses one, and the item key that names it.
type listKind struct {
	key, method, nameKey string
}

var listKinds = [...]listKind{
	{"tools", authz.MethodToolsCall, "name"},
	{"prompts", authz.MethodPromptsGet, "name"},
	{"resources", authz.MethodResourcesRead, "uri"},
	{"resourceTemplates", authz.MethodResourcesRead, "uriTemplate"},
}

// isListMethod reports whether a request's result lists items.
func isListMethod(method []byte) bool {
	switch string(method) {
	case authz.MethodToolsList, authz.MethodPromptsList, authz.MethodResourcesList, authz.MethodResourceTemplatesList:
		return true
	}
	return false
}

// hasListRequest reports whether a request holds a list request.
func hasListRequest(in inspection) bool {
	for i := range in.messages {
		if m := &in.messages[i]; m.hasMethod && m.id != nil && isListMethod(m.method) {
			return true
		}
	}
	return false
}

// listFilter filters the lists of one response for one caller.
type listFilter struct {
	f       *Filter
	who     caller
	listers [len(listKinds)]*authz.Lister // made on first use
}

// rewrite returns a JSON-RPC message, or a batch of them, with its list
// results filtered, and whether it changed. Only the lists (and the cache
// scope of their results) are written anew; every other byte is the
// original's.
func (lf *listFilter) rewrite(data []byte) (out []byte, changed bool, err error) {
	defer func() {
		// A response the walker cannot follow is not forwarded: it is
		// refused or cut, and said so, rather than taking the connection
		// down with a panic.
		if p := recover(); p != nil {
			out, changed, err = nil, false, fmt.Errorf("the filter failed on it: %v", p)
		}
	}()
	if !json.Valid(data) {
		return nil, false, errors.New("not JSON")
	}
	start := skipSpace(data, 0)
	whole := span{start, valueEnd(data, start)}
	var edits []edit
	if data[start] == '[' {
		for m := range elements(data, whole) {
			edits = lf.filterMessage(data, m, edits)
		}
	} else {
		edits = lf.filterMessage(data, whole, edits)
	}
	if len(edits) == 0 {
		return data, false, nil
	}
	// A result's cacheScope may come before its list.
	slices.SortFunc(edits, func(a, b edit) int { return a.at.start - b.at.start })
	return applyEdits(data, edits), true, nil
}

// edit replaces the bytes of a span.
type edit struct {
	at   span
	with []byte
}

// applyEdits returns data with the edits, which are in order of their
// spans and do not overlap, applied.
func applyEdits(data []byte, edits []edit) []byte {
	size := len(data)
	for _, e := range edits {
		size += len(e.with) - (e.at.end - e.at.start)
	}
	out := make([]byte, 0, size)
	last := 0
	for _, e := range edits {
		out = append(out, data[last:e.at.start]...)
		out = append(out, e.with...)
		last = e.at.end
	}
	return append(out, data[last:]...)
}

// filterMessage appends the edits that filter the lists of the JSON-RPC
// message at m. Keys are matched as the most lenient client reads them,
// without case (Go's encoding/json), and every member that matches is
// filtered, whichever of them a client reads.
func (lf *listFilter) filterMessage(data []byte, m span, edits []edit) []edit {
	for mem := range members(data, m) {
		if keyIs(data, mem.key, "result", true) {
			edits = lf.filterResult(data, mem.value, edits)
		}
	}
	return edits
}

// filterResult appends the edits that filter the lists of one result and
// mark it private when it says how widely it may be cached.
func (lf *listFilter) filterResult(data []byte, result span, edits []edit) []edit {
	filtered := false
	var cacheScope []span
	var lastMember span
	hasTTL := false
	for mem := range members(data, result) {
		lastMember = mem.value
		switch {
		case keyIs(data, mem.key, "cacheScope", true):
			cacheScope = append(cacheScope, mem.value)
			continue
		case keyIs(data, mem.key, "ttlMs", true):
			hasTTL = true
			continue
		}
		for k, kind := range listKinds {
			if data[mem.value.start] != '[' || !keyIs(data, mem.key, kind.key, true) {
				continue
			}
			edits = append(edits, edit{mem.value, lf.filterList(data, mem.value, k)})
			filtered = true
		}
	}
	if !filtered {
		return edits
	}
	for _, v := range cacheScope {
		edits = append(edits, edit{v, []byte(`"private"`)})
	}
	if len(cacheScope) == 0 && hasTTL {
		// After the last member.
		edits = append(edits, edit{span{lastMember.end, lastMember.end}, []byte(`,"cacheScope":"private"`)})
	}
	return edits
}

// filterList returns the array at list with only the items the caller
// sees. An item is named by its kind's key, spelled exactly and once: an
// item a client could read another name from is listed to no one.
func (lf *listFilter) filterList(data []byte, list span, k int) []byte {
	kind := listKinds[k]
	if lf.listers[k] == nil {
		lf.listers[k] = lf.f.authz.Lister(kind.method, lf.who.user, lf.who.claims)
	}
	l := lf.listers[k]
	out := make([]byte, 0, list.end-list.start)
	out = append(out, '[')
	hidden := 0
	for item := range elements(data, list) {
		name, ok := itemName(data, item, kind.nameKey)
		if !ok || !l.Visible(name) {
			hidden++
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, data[item.start:item.end]...)
	}
	if hidden > 0 {
		lf.f.metrics.hidden.Add(float64(hidden))
	}
	for _, err := range l.Errors {
		lf.f.shared.logger.Warn("an authorization condition could not be evaluated for a list; it counts as false",
			"server", lf.f.server, "user", lf.who.user, "error", err)
	}
	l.Errors = nil
	return append(out, ']')
}

// itemName returns the string an item is named by under key; false when
// the item is not an object, has no such string, or has the key in more
// than one spelling (Go clients match keys without case).
func itemName(data []byte, item span, key string) (string, bool) {
	var value span
	found := 0
	for mem := range members(data, item) {
		if keyIs(data, mem.key, key, true) {
			found++
			if !keyIs(data, mem.key, key, false) {
				return "", false
			}
			value = mem.value
		}
	}
	if found != 1 {
		return "", false
	}
	return stringValue(data, value)
}

// listWriter filters the lists of a response on its way to the client.
// Finish must be called when the next handler has returned.
type listWriter struct {
	http.ResponseWriter
	lf     listFilter
	mode   listMode
	status int
	buf    []byte
	// tooLarge says a JSON body passed maxListResponseBytes; the rest is
	// discarded and the client gets 502.
	tooLarge bool
	// cut says the event stream was cut; nothing more is written.
	cut error
}

type listMode uint8

const (
	modeUndecided listMode = iota
	modePass               // not a response that can hold a list
	modeBuffered           // a body read whole, then filtered
	modeEvents             // an event stream, filtered event by event
)

func (w *listWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *listWriter) WriteHeader(code int) {
	if w.mode != modeUndecided {
		return
	}
	if code >= 100 && code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	h := w.Header()
	mediaType, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch {
	case code < 200 || code >= 300:
		w.mode = modePass // an error: no result
	case mediaType == "text/event-stream":
		w.mode = modeEvents
	default:
		w.mode, w.status = modeBuffered, code
		return // written by Finish, with the filtered length
	}
	if w.mode == modeEvents || codingOf(h) != "" {
		// Event lengths change; a compressed stream is cut at its
		// first event below.
		h.Del("Content-Length")
	}
	w.ResponseWriter.WriteHeader(code)
}

// codingOf returns a message's content coding, "" for identity: the first
// coding of its Content-Encoding fields that is not identity.
func codingOf(h http.Header) string {
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return c
			}
		}
	}
	return ""
}

func (w *listWriter) Write(p []byte) (int, error) {
	if w.mode == modeUndecided {
		w.WriteHeader(http.StatusOK)
	}
	switch w.mode {
	case modeBuffered:
		if w.tooLarge || len(w.buf)+len(p) > maxListResponseBytes {
			w.tooLarge, w.buf = true, nil
			return len(p), nil
		}
		w.buf = append(w.buf, p...)
		return len(p), nil
	case modeEvents:
		if w.cut != nil {
			return 0, w.cut
		}
		if c := codingOf(w.Header()); c != "" {
			return 0, w.cutStream(fmt.Errorf("the event stream is encoded (%s)", c))
		}
		w.buf = append(w.buf, p...)
		if err := w.writeEvents(); err != nil {
			return 0, w.cutStream(err)
		}
		if len(w.buf) > maxListResponseBytes {
			return 0, w.cutStream(fmt.Errorf("an event exceeds %d bytes", maxListResponseBytes))
		}
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// cutStream stops an event stream the filter cannot read: the next handler
// gets err from its write and gives up.
func (w *listWriter) cutStream(err error) error {
	w.cut = fmt.Errorf("filter: the backend's event stream was cut: %w", err)
	w.buf = nil
	w.lf.f.shared.logger.Warn("cut an event stream whose lists could not be filtered",
		"server", w.lf.f.server, "user", w.lf.who.user, "error", err)
	return w.cut
}

// writeEvents writes the complete events in buf, filtered, and keeps the
// incomplete rest.
func (w *listWriter) writeEvents() error {
	start := 0
	for {
		n := eventLength(w.buf[start:])
		if n == 0 {
			break
		}
		event := w.buf[start : start+n]
		out, err := w.lf.rewriteEvent(event)
		if err != nil {
			return err
		}
		if _, err := w.ResponseWriter.Write(out); err != nil { //nolint:gosec // the backend's event stream, filtered, served as it came (text/event-stream)
			return err
		}
		start += n
	}
	if start > 0 {
		w.buf = append(w.buf[:0], w.buf[start:]...)
	}
	return nil
}

func (w *listWriter) FlushError() error {
	if w.mode == modeUndecided {
		w.WriteHeader(http.StatusOK)
	}
	if w.mode == modeBuffered {
		return nil // written whole by Finish
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *listWriter) Flush() { _ = w.FlushError() }

// Finish writes a buffered response, filtered. What remains of an event
// stream is an event without its end, which no client dispatches: it is
// dropped.
func (w *listWriter) Finish() {
	if w.mode != modeBuffered {
		return
	}
	h := w.Header()
	body, status := w.buf, w.status
	if len(body) > 0 {
		mediaType, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
		var problem string
		switch {
		case w.tooLarge:
			problem = fmt.Sprintf("exceeds %d bytes", maxListResponseBytes)
		case codingOf(h) != "":
			problem = "is encoded (" + codingOf(h) + ")"
		case mediaType != "application/json":
			problem = "is not JSON (Content-Type " + strconv.Quote(h.Get("Content-Type")) + ")"
		default:
			out, _, err := w.lf.rewrite(body)
			if err != nil {
				problem = "cannot be read: " + err.Error()
			}
			body = out
		}
		if problem != "" {
			w.lf.f.shared.logger.Warn("refused a backend response whose lists could not be filtered",
				"server", w.lf.f.server, "user", w.lf.who.user, "problem", problem)
			h.Del("Content-Encoding")
			w.lf.f.refuse(w.ResponseWriter, http.StatusBadGateway, reasonListUnreadable, nil, CodeInternalError,
				"Bad Gateway: the server's response "+problem+"; the gateway cannot filter its lists")
			return
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.ResponseWriter.WriteHeader(status)
	_, _ = w.ResponseWriter.Write(body) //nolint:gosec // the backend's JSON, filtered
}

// eventLength returns the length of the first complete event of an event
// stream (text/event-stream: lines ended by CRLF, LF or CR; an empty line
// ends an event), 0 when b holds none yet.
func eventLength(b []byte) int {
	lineStart := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\n' && c != '\r' {
			continue
		}
		end := i + 1
		if c == '\r' && end < len(b) && b[end] == '\n' {
			// A CR last in b ends its line, as it does for a client; an LF
			// that follows it later reads as an empty event, passed on as
			// it is.
			end++
		}
		if i == lineStart {
			return end // an empty line
		}
		i, lineStart = end-1, end
	}
	return 0
}

// rewriteEvent returns an event with the list results of its data
// filtered: the same bytes when nothing changed, else its other fields and
// one data line.
func (lf *listFilter) rewriteEvent(event []byte) ([]byte, error) {
	var data []byte
	dataLines := 0
	for line := range eventLines(event) {
		value, ok := dataValue(line)
		if !ok {
			continue
		}
		if dataLines > 0 {
			data = append(data, '\n')
		}
		data = append(data, value...)
		dataLines++
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) == 0 || trimmed[0] != '{' && trimmed[0] != '[' {
		// A priming event, a comment, a retry, the legacy transport's
		// endpoint: nothing a client reads as JSON-RPC. What starts as
		// JSON must be JSON, all of it.
		return event, nil
	}
	out, changed, err := lf.rewrite(data)
	if err != nil {
		return nil, fmt.Errorf("an event's data cannot be read: %w", err)
	}
	if !changed {
		return event, nil
	}
	rewritten := make([]byte, 0, len(out)+64)
	wroteData := false
	for line := range eventLines(event) {
		if _, ok := dataValue(line); ok {
			if !wroteData {
				rewritten = append(append(append(rewritten, "data: "...), out...), '\n')
				wroteData = true
			}
			continue
		}
		rewritten = append(append(rewritten, line...), '\n')
	}
	return append(rewritten, '\n'), nil
}

// eventLines yields the lines of an event, without their ends, up to the
// empty line that ends it.
func eventLines(event []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(event) > 0 {
			i := bytes.IndexAny(event, "\r\n")
			if i <= 0 {
				return // the empty line, or no end
			}
			line := event[:i]
			next := i + 1
			if event[i] == '\r' && next < len(event) && event[next] == '\n' {
				next++
			}
			if !yield(line) {
				return
			}
			event = event[next:]
		}
	}
}

// dataValue returns the value of a data field line (SSE: "data", then
// optionally a colon and one space to skip).
func dataValue(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte("data"))
	if !ok {
		return nil, false
	}
	if len(rest) == 0 {
		return rest, true
	}
	if rest[0] != ':' {
		return nil, false // another field, such as "database"
	}
	rest = rest[1:]
	if len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	return rest, true
}
