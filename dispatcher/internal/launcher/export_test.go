package launcher

// Looping reports whether Run runs (its rounds wake waiting builds).
func (l *Launcher) Looping() bool { return l.looping.Load() }
