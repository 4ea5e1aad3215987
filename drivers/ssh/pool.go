package ssh

import (
	"container/list"
	"context"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// conn is one pooled SSH connection to one server.
type conn struct {
	key     string // pool key: the VPS ID
	addr    string // host:port it was dialled at
	client  *gossh.Client
	hostKey []byte // wire form of the host key the server presented
	hostTxt string // the same in authorized_keys form

	// Guarded by pool.mu.
	inUse    int
	lastUsed time.Time
	retired  bool          // out of the map; closed when the last user releases it
	elem     *list.Element // its place in pool.lru while pooled
}

// dialFunc opens a new authenticated connection.
type dialFunc func(ctx context.Context) (*conn, error)

// pool holds at most one SSH client per server, shared by concurrent checks
// (SSH multiplexes sessions over one connection). A server is dialled by one
// caller at a time; the others wait for that dial, within their own context.
type pool struct {
	max  int
	idle time.Duration

	mu      sync.Mutex
	conns   map[string]*conn
	lru     *list.List // the pooled connections, least recently used first
	dialing map[string]chan struct{}
	closed  bool

	stop     chan struct{} // closed by close: ends the reaper
	stopOnce sync.Once
	reaped   chan struct{} // closed when the reaper has returned
}

// newPool returns a pool and starts its reaper, which closes connections idle
// for longer than idle until close.
func newPool(max int, idle time.Duration) *pool {
	p := &pool{max: max, idle: idle, conns: map[string]*conn{}, lru: list.New(), dialing: map[string]chan struct{}{},
		stop: make(chan struct{}), reaped: make(chan struct{})}
	go p.reapLoop()
	return p
}

// reapLoop reaps idle connections every half idle timeout (at most a minute)
// until close.
func (p *pool) reapLoop() {
	defer close(p.reaped)
	t := time.NewTicker(min(p.idle/2, time.Minute))
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.reap(now)
		case <-p.stop:
			return
		}
	}
}

// get returns a connection to the server key at addr, reusing the pooled one
// when it was dialled at the same address and presented the pinned key (none
// pinned: any). reused says whether it was pooled.
func (p *pool) get(ctx context.Context, key, addr string, pin hostPin, dial dialFunc) (c *conn, reused bool, err error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, errClosed
		}
		if c := p.conns[key]; c != nil {
			if c.addr == addr && (pin.none() || pin.matches(c.hostKey)) {
				c.inUse++
				c.lastUsed = time.Now()
				p.lru.MoveToBack(c.elem)
				p.mu.Unlock()
				return c, true, nil
			}
			// The server moved or its pin changed: never reuse a connection
			// authenticated against other expectations.
			p.retireLocked(c)
		}
		if wait, ok := p.dialing[key]; ok {
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		done := make(chan struct{})
		p.dialing[key] = done
		p.mu.Unlock()

		c, err := dial(ctx)

		p.mu.Lock()
		delete(p.dialing, key)
		close(done)
		if err != nil {
			p.mu.Unlock()
			return nil, false, err
		}
		c.key, c.addr, c.inUse, c.lastUsed = key, addr, 1, time.Now()
		if p.closed {
			c.retired = true
		} else {
			p.conns[key] = c
			c.elem = p.lru.PushBack(c)
			p.evictLocked()
		}
		p.mu.Unlock()
		go p.watch(c)
		return c, false, nil
	}
}

// watch drops c from the pool as soon as its connection ends, so the next
// check redials instead of failing on a dead client.
func (p *pool) watch(c *conn) {
	_ = c.client.Wait()
	p.mu.Lock()
	p.retireLocked(c)
	p.mu.Unlock()
}

// release ends one use of c. A broken connection is retired: it is closed once
// no other check uses it, and the next get dials afresh.
func (p *pool) release(c *conn, broken bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.inUse--
	c.lastUsed = time.Now()
	if c.elem != nil {
		p.lru.MoveToBack(c.elem)
	}
	if broken {
		p.retireLocked(c)
	}
	if c.retired && c.inUse == 0 {
		go c.client.Close()
	}
}

// retireLocked takes c out of the map; it is closed now if unused, else by
// the last release.
func (p *pool) retireLocked(c *conn) {
	if p.conns[c.key] == c {
		delete(p.conns, c.key)
		p.lru.Remove(c.elem)
		c.elem = nil
	}
	if !c.retired {
		c.retired = true
		if c.inUse == 0 {
			go c.client.Close()
		}
	}
}

// evictLocked closes the least recently used idle connections while the pool
// holds more than max. Connections in use are never evicted, so the pool may
// briefly exceed max by the number of checks in flight. The LRU list makes it
// cost the connections in use it skips, not the pool's size: a fleet larger
// than the pool evicts on every dial.
func (p *pool) evictLocked() {
	e := p.lru.Front()
	for len(p.conns) > p.max && e != nil {
		c, next := e.Value.(*conn), e.Next()
		if c.inUse == 0 {
			p.retireLocked(c)
		}
		e = next
	}
}

// reap closes connections idle for longer than the idle timeout: those at
// the front of the LRU list, up to the first one used since.
func (p *pool) reap(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for e := p.lru.Front(); e != nil; {
		c, next := e.Value.(*conn), e.Next()
		if now.Sub(c.lastUsed) <= p.idle {
			return
		}
		if c.inUse == 0 {
			p.retireLocked(c)
		}
		e = next
	}
}

// size returns how many connections are pooled.
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close stops the reaper and closes every pooled connection; later gets fail
// with errClosed. It is safe to call more than once.
func (p *pool) close() {
	p.stopOnce.Do(func() {
		close(p.stop)
		<-p.reaped
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		p.retireLocked(c)
	}
}
