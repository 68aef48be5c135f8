package common // stand-in: the retry helper the engine takes from GSI

import "time"

type RetryHelper struct {
	maxRetries, factor int
	interval           time.Duration
	call               func(attempt int, lastErr error) error
}

func NewRetryHelper(maxRetries int, interval time.Duration, factor int, call func(int, error) error) *RetryHelper {
	return &RetryHelper{maxRetries: maxRetries, factor: factor, interval: interval, call: call}
}

func (r *RetryHelper) Run() error {
	var err error
	wait := r.interval
	for i := 0; i <= r.maxRetries; i++ {
		if err = r.call(i, err); err == nil {
			return nil
		}
		time.Sleep(wait)
		wait *= time.Duration(r.factor)
	}
	return err
}
