package gateway

import (
	"bufio"
	"errors"
	"io"
	"net/http/httputil"
	"strings"
	"testing"
	"testing/iotest"
)

func TestChunkReaderDecodesWhatNetHTTPEncodes(t *testing.T) {
	for _, body := range []string{
		"",
		"data: x\n\n",
		strings.Repeat("data: a longer event than a buffer holds\n\n", 200),
	} {
		var encoded strings.Builder
		w := httputil.NewChunkedWriter(&encoded)
		for rest := body; rest != ""; {
			n := min(len(rest), 1+len(rest)/3) // chunks of several sizes
			_, _ = io.WriteString(w, rest[:n])
			rest = rest[n:]
		}
		_ = w.Close()
		encoded.WriteString("\r\n") // the end of the (empty) trailer section
		for _, name := range []string{"whole", "one byte at a time"} {
			var src io.Reader = strings.NewReader(encoded.String())
			if name != "whole" {
				src = iotest.OneByteReader(src)
			}
			got, err := io.ReadAll(&chunkReader{br: bufio.NewReaderSize(src, 16)})
			if err != nil || string(got) != body {
				t.Errorf("%d bytes read %s: got %d bytes, %v", len(body), name, len(got), err)
			}
		}
	}
}

func TestChunkReaderRefusesBadFramingAndCutBodies(t *testing.T) {
	for _, tc := range []struct {
		name, encoded string
		want          error
	}{
		{"a size that is not hexadecimal", "zz\r\nabc\r\n0\r\n\r\n", errChunkFraming},
		{"an empty size", "\r\nabc\r\n0\r\n\r\n", errChunkFraming},
		{"a negative size", "-3\r\nabc\r\n0\r\n\r\n", errChunkFraming},
		{"data longer than its size", "3\r\nabcd\r\n0\r\n\r\n", errChunkFraming},
		{"a size line longer than the buffer", strings.Repeat("0", 64) + "3\r\nabc\r\n0\r\n\r\n", errChunkFraming},
		{"cut in a size line", "3", io.ErrUnexpectedEOF},
		{"cut in the data", "3\r\nab", io.ErrUnexpectedEOF},
		{"cut before the last chunk", "3\r\nabc\r\n", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := io.ReadAll(&chunkReader{br: bufio.NewReaderSize(strings.NewReader(tc.encoded), 16)})
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
	got, err := io.ReadAll(&chunkReader{br: bufio.NewReaderSize(strings.NewReader("3;name=value\r\nabc\r\n2 \r\nde\r\n0\r\n\r\n"), 16)})
	if err != nil || string(got) != "abcde" {
		t.Errorf("chunks with an extension and trailing space: %q, %v", got, err)
	}
}

// A stream is quiet only between chunks with nothing buffered: where its
// next read would wait for the connection, and nothing read is held back.
func TestChunkReaderIsQuietOnlyBetweenChunksWithNothingBuffered(t *testing.T) {
	pr, pw := io.Pipe()
	defer func() { _ = pr.Close() }()
	c := &chunkReader{br: bufio.NewReaderSize(pr, 64)}
	if !c.quiet() {
		t.Fatal("not quiet before anything arrived")
	}
	send := func(s string) {
		go func() { _, _ = io.WriteString(pw, s) }()
	}
	buf := make([]byte, 4)
	read := func(want string) {
		t.Helper()
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
	send("6\r\nabcdef\r\n")
	read("abcd")
	if c.quiet() {
		t.Error("quiet with two bytes of a chunk left")
	}
	read("ef")
	if !c.quiet() {
		t.Error("not quiet after a whole chunk, its line end buffered")
	}
	send("3\r\nghi") // the line end comes later
	read("ghi")
	if c.quiet() {
		t.Error("quiet before the chunk's line end arrived")
	}
	send("\r\n2\r\njk\r\n")
	read("jk")
	if !c.quiet() {
		t.Error("not quiet after the next chunk")
	}
}
