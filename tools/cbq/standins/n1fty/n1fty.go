package n1fty // stand-in: no FTS in this build

import (
	"github.com/couchbase/query/datastore"
	"github.com/couchbase/query/errors"
)

func SetDeploymentModel(string)                                    {}
func SetConnectionSecurityConfig(*datastore.ConnectionSecurityConfig) {}
func NewFTSIndexer(server, namespace, keyspace string) (datastore.Indexer, errors.Error) {
	return nil, errors.NewError(nil, "FTS is not in this build")
}
func NewFTSIndexer2(server, namespace, bucket, scope, keyspace string) (datastore.Indexer, errors.Error) {
	return nil, errors.NewError(nil, "FTS is not in this build")
}
func GetConfig() (datastore.IndexConfig, errors.Error) {
	return nil, errors.NewError(nil, "FTS is not in this build")
}
