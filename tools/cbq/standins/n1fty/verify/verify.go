package verify // stand-in: no FTS in this build

import (
	"github.com/couchbase/query/datastore"
	"github.com/couchbase/query/errors"
	"github.com/couchbase/query/value"
)

func NewVerify(keyspace, field string, query, options value.Value, parallelism int) (datastore.Verify, errors.Error) {
	return nil, errors.NewError(nil, "FTS is not in this build")
}
