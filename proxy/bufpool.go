package proxy

import (
	"bufio"
	"io"
	"sync"
)

// bufPool pools the reader and writer of one kind of short exchange: a
// session's pre-auth phase, an upstream login. Such an exchange moves a few
// hundred bytes before the relay takes the connection, and allocating the
// buffers for every login and dropping them at the relay was a tenth of a
// login's allocation. The zero value is an empty pool.
type bufPool struct {
	pool sync.Pool // of *bufPair
}

// bufPair is a reader and a writer from a bufPool.
type bufPair struct {
	r    *bufio.Reader
	w    *bufio.Writer
	home *bufPool
}

// get returns a reader of r (rsize bytes) and a writer to w (wsize), from
// the pool when it has a pair. A pool serves one pair of sizes.
func (p *bufPool) get(r io.Reader, w io.Writer, rsize, wsize int) *bufPair {
	b, _ := p.pool.Get().(*bufPair)
	if b == nil {
		return &bufPair{r: bufio.NewReaderSize(r, rsize), w: bufio.NewWriterSize(w, wsize), home: p}
	}
	b.r.Reset(r)
	b.w.Reset(w)
	return b
}

// release puts b back into its pool, holding no connection. What the
// buffers still hold of the last exchange is never read again: a reader
// and a writer start empty after Reset. b must not be used afterwards.
func (b *bufPair) release() {
	b.r.Reset(nil)
	b.w.Reset(nil)
	b.home.pool.Put(b)
}
