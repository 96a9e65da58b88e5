package server

import (
	"context"
	"fmt"
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
// the file itself. A path that is a link is watched in the directory it
// resolves to as well, since rewriting the target there raises no event
// beside the link; after each change the links are resolved again, so a
// link pointed elsewhere is followed to its new directory. Any event in a
// watched directory triggers a reload; the reload itself decides whether
// anything changed.
func watchFiles(ctx context.Context, log *slog.Logger, paths []string, reload func()) error {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	watched := map[string]bool{}
	watchNew := func() error {
		for _, dir := range watchDirs(paths) {
			if watched[dir] {
				continue
			}
			if err := watcher.Add(dir); err != nil {
				return fmt.Errorf("watching %s: %w", dir, err)
			}
			watched[dir] = true
		}
		return nil
	}
	if err := watchNew(); err != nil {
		watcher.Close()
		return err
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
				// Before the reload, so that a write to a link's new
				// target after this point raises an event.
				if err := watchNew(); err != nil {
					log.Warn("watching certificate files", KeyError, err.Error())
				}
				reload()
			}
		}
	}()
	return nil
}

// watchDirs returns the directories holding paths and, for a path that
// is a link, the directory of the file it resolves to now.
func watchDirs(paths []string) []string {
	var dirs []string
	for _, p := range paths {
		dirs = append(dirs, filepath.Dir(p))
		if resolved, err := filepath.EvalSymlinks(p); err == nil && filepath.Dir(resolved) != filepath.Dir(p) {
			dirs = append(dirs, filepath.Dir(resolved))
		}
	}
	return dirs
}
