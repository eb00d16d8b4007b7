// Command lastevent-pprof is lastevent with net/http/pprof on
// LOADBENCH_PPROF_ADDR, for profiling under load where the binary under test
// has no LASTEVENT_PPROF. It wires the proxy package exactly as main.go does
// (same configuration, same "lastevent started" log line). Mutex profiling
// is on at a rate that costs little; block profiling is not (it showed up
// in the CPU profile itself).
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/lastevent/lastevent/proxy"
)

func main() {
	cfg, warnings, err := proxy.LoadConfig(os.Environ())
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lastevent: invalid configuration:\n%s\n", err)
		os.Exit(2)
	}
	log := proxy.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if addr := os.Getenv("LOADBENCH_PPROF_ADDR"); addr != "" {
		runtime.SetMutexProfileFraction(20) // 1 in 20 contentions: cheap
		go func() { log.Warn().Err(http.ListenAndServe(addr, nil)).Msg("pprof server ended") }()
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		log.Error().Err(err).Msg("cannot listen")
		os.Exit(1)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		log.Error().Err(err).Msg("cannot listen")
		os.Exit(1)
	}
	srv := proxy.NewServer(&cfg, log, "pprof")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln, adminLn) }()
	log.Info().Str("listen", ln.Addr().String()).Str("admin", adminLn.Addr().String()).
		Str("mode", cfg.Mode.String()).Msg("lastevent started")
	select {
	case err := <-errc:
		log.Error().Err(err).Msg("server stopped")
		os.Exit(1)
	case <-sig:
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		os.Exit(1)
	}
}
