package n1ql // stand-in: no GSI in this build

import (
	"net/http"

	"github.com/couchbase/query/datastore"
	"github.com/couchbase/query/errors"
)

func SetDeploymentModel(string)                                    {}
func SetConnectionSecurityConfig(*datastore.ConnectionSecurityConfig) {}
func NewGSIIndexer(clusterURL, namespace, keyspace string, _ *datastore.ConnectionSecurityConfig) (datastore.Indexer, errors.Error) {
	return nil, errors.NewError(nil, "GSI is not in this build")
}
func NewGSIIndexer2(clusterURL, namespace, bucket, scope, keyspace string, _ *datastore.ConnectionSecurityConfig) (datastore.Indexer, errors.Error) {
	return nil, errors.NewError(nil, "GSI is not in this build")
}
func GetIndexConfig() (datastore.IndexConfig, errors.Error) {
	return nil, errors.NewError(nil, "GSI is not in this build")
}

type InternalVersionHandler struct{}

func NewInternalVersionHandler() *InternalVersionHandler { return &InternalVersionHandler{} }
func (*InternalVersionHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusNotImplemented)
}
