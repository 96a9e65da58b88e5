package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDebounce gathers the burst of events one replacement makes (create,
// write, chmod, rename) into a single reload.
const watchDebounce = 100 * time.Millisecond

// watchFiles calls reload after any of paths may have changed, until ctx
// ends. It watches their directories rather than the files: editors,
// `pki` commands and Kubernetes all replace a file by renaming another over
// it (Kubernetes swaps a symlinked directory), which would end a watch on
// the file itself. Any event in a watched directory triggers a reload; the
// reload itself decides whether anything changed.
//
// NOTE: a path that is a link into another directory is not followed: a
// rewrite of its target there raises no event here, and only SIGHUP (or
// [Server.Reload]) picks it up. Watching each link's resolved directory
// as well would close the gap.
func watchFiles(ctx context.Context, log *slog.Logger, paths []string, reload func()) error {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	dirs := map[string]bool{}
	for _, p := range paths {
		dir := filepath.Dir(p)
		if dirs[dir] {
			continue
		}
		if err := watcher.Add(dir); err != nil {
			watcher.Close()
			return err
		}
		dirs[dir] = true
	}

	go func() {
		defer watcher.Close()
		var pending <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-watcher.Events:
				if !ok {
					return
				}
				pending = time.After(watchDebounce)
			case err, ok := <-watcher.Errors:
				if !ok {
					return
				}
				log.Warn("watching certificate files", KeyError, err.Error())
			case <-pending:
				pending = nil
				reload()
			}
		}
	}()
	return nil
}
