// Command bare is the ceiling scripts/load/poll.sh measures a poll against: a
// bare net/http server (no router, no middleware, no database) that answers
// every request with the bytes of one real poll response, its headers as
// captured with `curl -D` and its body. Same listener setup as chom (a plain
// net.Listen on loopback, net/http's Server), same client (wrk and poll.lua),
// so what separates the two figures is what chom does per request.
//
//	go run ./scripts/load/bare -listen 127.0.0.1:8081 -headers hdr.txt -body body.json
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	headers := flag.String("headers", "", "response headers as `curl -D` wrote them (status line first)")
	body := flag.String("body", "", "response body file")
	flag.Parse()
	if err := run(*listen, *headers, *body); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func run(listen, headersFile, bodyFile string) error {
	raw, err := os.ReadFile(headersFile)
	if err != nil {
		return fmt.Errorf("read headers: %w", err)
	}
	hdr, err := parseHeaders(raw)
	if err != nil {
		return err
	}
	payload, err := os.ReadFile(bodyFile)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		dst := w.Header()
		for k, v := range hdr {
			dst[k] = v
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(payload)
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The timeouts of chom's server (internal/stack.ServeHTTP).
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 45 * time.Second, IdleTimeout: 120 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Println(ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// parseHeaders reads a `curl -D` dump: a status line, then headers. Date and
// Content-Length are left to net/http, which writes them as chom's server does.
func parseHeaders(raw []byte) (http.Header, error) {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	status, err := r.ReadLine()
	if err != nil || !strings.HasPrefix(status, "HTTP/") {
		return nil, fmt.Errorf("headers: no status line (%q): %v", status, err)
	}
	mh, err := r.ReadMIMEHeader()
	if err != nil && len(mh) == 0 {
		return nil, fmt.Errorf("headers: %w", err)
	}
	h := http.Header(mh)
	h.Del("Date")
	h.Del("Content-Length")
	return h, nil
}
