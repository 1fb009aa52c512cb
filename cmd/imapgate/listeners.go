package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
)

// listenerSet is the client listeners of a running proxy. A reload adds the
// listeners the new config names, closes the ones it no longer names (their
// sessions keep running: a session does not depend on its listener), and
// switches the TLS settings of the ones it keeps without closing them.
type listenerSet struct {
	srv *proxy.Server
	log *slog.Logger
	wg  sync.WaitGroup // one per Serve goroutine

	mu   sync.Mutex
	live map[string]*liveListener // by address
}

// liveListener is one bound listener.
type liveListener struct {
	key     string // what must match for a reload to keep it bound
	ln      net.Listener
	tls     atomic.Pointer[tls.Config]
	removed atomic.Bool
}

// getConfig serves the handshake with the TLS settings of the latest
// config (certificates, minimum version), so a reload reaches listeners
// that stay bound.
func (l *liveListener) getConfig(*tls.ClientHelloInfo) (*tls.Config, error) {
	return l.tls.Load(), nil
}

func newListenerSet(srv *proxy.Server, log *slog.Logger) *listenerSet {
	return &listenerSet{srv: srv, log: log, live: map[string]*liveListener{}}
}

// listenerKey is what a listener is bound with: change any of it and the
// listener is closed and bound again.
func listenerKey(l ListenConfig, cfg *Config) string {
	k := l.Address + "|" + l.TLS
	if l.ProxyProtocol {
		k += "|proxy|" + strings.Join(cfg.Policy.TrustedProxies, ",")
	}
	return k
}

// apply makes the bound listeners match cfg (rc is built from cfg). New
// addresses are bound first: if one cannot be bound, nothing changes and
// the error says which. Then listeners that changed their mode are bound
// again, kept ones get the new TLS settings, and removed ones are closed.
func (ls *listenerSet) apply(rc *runConfig, cfg *Config) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	type want struct {
		i   int
		key string
	}
	wanted := map[string]want{}
	var fresh []*liveListener
	var freshIdx []int
	for i, l := range cfg.Listen {
		key := listenerKey(l, cfg)
		wanted[l.Address] = want{i, key}
		if _, ok := ls.live[l.Address]; ok {
			continue
		}
		ln, err := bindListener(i, l, cfg)
		if err != nil {
			for _, f := range fresh {
				f.ln.Close()
			}
			return err
		}
		fresh = append(fresh, &liveListener{key: key, ln: ln})
		freshIdx = append(freshIdx, i)
	}
	for addr, old := range ls.live {
		w, ok := wanted[addr]
		switch {
		case !ok:
			ls.stop(addr, old)
			ls.log.Info("listener removed; its sessions keep running", "address", addr)
		case w.key != old.key:
			ls.stop(addr, old)
			ln, err := bindListener(w.i, cfg.Listen[w.i], cfg)
			if err != nil {
				ls.log.Error("listener changed but could not be bound again", "address", addr, "err", err)
				continue
			}
			fresh = append(fresh, &liveListener{key: w.key, ln: ln})
			freshIdx = append(freshIdx, w.i)
		default:
			old.tls.Store(rc.listeners[w.i].TLSConfig)
		}
	}
	for j, l := range fresh {
		i := freshIdx[j]
		l.tls.Store(rc.listeners[i].TLSConfig)
		ls.live[cfg.Listen[i].Address] = l
		pl := rc.listeners[i]
		pl.TLSConfig = &tls.Config{GetConfigForClient: l.getConfig}
		ls.wg.Add(1)
		go ls.serveListener(l, pl)
		ls.log.Info("listening", "address", l.ln.Addr().String(), "tls", cfg.Listen[i].TLS)
	}
	return nil
}

// stop closes a listener that the config no longer names.
func (ls *listenerSet) stop(addr string, l *liveListener) {
	l.removed.Store(true)
	l.ln.Close()
	delete(ls.live, addr)
}

// serveListener accepts on one listener until it is removed or the server
// shuts down.
func (ls *listenerSet) serveListener(l *liveListener, pl proxy.Listener) {
	defer ls.wg.Done()
	err := ls.srv.Serve(l.ln, pl)
	if err != nil && !errors.Is(err, proxy.ErrServerClosed) && !l.removed.Load() {
		ls.log.Error("listener stopped", "listener", pl.Name, "err", err)
	}
}

// addrs returns the bound addresses (tests, logs).
func (ls *listenerSet) addrs() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := make([]string, 0, len(ls.live))
	for a := range ls.live {
		out = append(out, a)
	}
	return out
}

// bindListener binds listen[i].
func bindListener(i int, l ListenConfig, cfg *Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", l.Address)
	if err != nil {
		return nil, fmt.Errorf("listen[%d]: cannot bind %s: %w", i, l.Address, err)
	}
	if l.ProxyProtocol {
		trusted, _ := policy.ParsePrefixes(cfg.Policy.TrustedProxies) // validated with the config
		ln = proxy.ProxyProtocolListener(ln, trusted)
	}
	return ln, nil
}
