package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// chunkReader decodes a body in HTTP/1.1's chunked coding (RFC 9112
// section 7.1) from br, and says when it stands between two chunks with
// nothing buffered (quiet): where a detached event stream can wait for its
// backend without a goroutine. net/http's own decoder hides that. Chunk
// extensions are ignored; the body ends at the last chunk, and its trailer
// section is left unread (the connection carries nothing after it).
type chunkReader struct {
	br *bufio.Reader
	// left is what remains of the current chunk's data; crlf says the line
	// end after that data is still to be read.
	left int64
	crlf bool
	err  error
}

var errChunkFraming = errors.New("malformed chunked encoding")

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for c.left == 0 {
		if c.crlf {
			if err := c.readCRLF(); err != nil {
				return 0, c.fail(err)
			}
		}
		size, err := c.readSize()
		if err != nil {
			return 0, c.fail(err)
		}
		if size == 0 {
			c.err = io.EOF
			return 0, io.EOF
		}
		c.left, c.crlf = size, true
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err != nil {
		return n, c.fail(err)
	}
	return n, nil
}

// fail records err, an unexpected end for io.EOF, as the reader's last.
func (c *chunkReader) fail(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	c.err = err
	return err
}

func (c *chunkReader) readCRLF() error {
	b, err := c.br.Peek(2)
	if err != nil {
		return err
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errChunkFraming
	}
	_, _ = c.br.Discard(2)
	c.crlf = false
	return nil
}

// readSize reads a chunk's size line.
func (c *chunkReader) readSize() (int64, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return 0, fmt.Errorf("%w: a chunk size line is longer than %d bytes", errChunkFraming, c.br.Size())
	}
	if err != nil {
		return 0, err
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	size, err := strconv.ParseInt(string(line), 16, 64)
	if err != nil || size < 0 || len(line) == 0 {
		return 0, fmt.Errorf("%w: chunk size %q", errChunkFraming, line)
	}
	return size, nil
}

// quiet reports whether the reader stands between chunks with nothing
// buffered: its next Read would wait for the connection. The line end of
// a chunk whose data was read whole is consumed when it is buffered.
func (c *chunkReader) quiet() bool {
	if c.err != nil || c.left != 0 {
		return false
	}
	if c.crlf {
		if c.br.Buffered() < 2 || c.readCRLF() != nil {
			return false
		}
	}
	return c.br.Buffered() == 0
}
