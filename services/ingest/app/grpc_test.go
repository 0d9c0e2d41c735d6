package app_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stickpoint/stickpoint/pkg/testutil"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
	eventsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/events/v1"
	ingestv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/ingest/v1"
)

func TestGRPCIngest(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine, nil)
			conn, err := grpc.NewClient(f.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			require.NoError(t, err)
			defer conn.Close()
			client := ingestv1.NewIngestServiceClient(conn)
			ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+f.tokenA)

			track := &ingestv1.TrackRequest{Call: &ingestv1.Call{MessageId: "g1", UserId: "u1"}, Event: "Report Built",
				PropertiesJson: `{"big":9007199254740993}`}
			for range 2 { // re-sent with the same messageId
				_, err = client.Track(ctx, track)
				require.NoError(t, err)
			}
			resp, err := client.Batch(ctx, &ingestv1.BatchRequest{Items: []*ingestv1.BatchItem{
				{Call: &ingestv1.BatchItem_Group{Group: &ingestv1.GroupRequest{Call: &ingestv1.Call{MessageId: "g2", UserId: "u1"}, GroupId: "acct-g"}}},
				{Call: &ingestv1.BatchItem_Identify{Identify: &ingestv1.IdentifyRequest{Call: &ingestv1.Call{MessageId: "g3", UserId: "u1"}, TraitsJson: `{"email":"a@b.c"}`}}},
				{Call: &ingestv1.BatchItem_Track{Track: &ingestv1.TrackRequest{Call: &ingestv1.Call{MessageId: "g4", UserId: "u1"}, Event: "Export"}}},
			}})
			require.NoError(t, err)
			require.Equal(t, uint32(3), resp.GetAccepted())
			f.waitStored(t, "tenant-a", 4)

			count, err := eventsv1.NewEventsServiceClient(conn).Count(ctx, &eventsv1.CountRequest{Type: "track"})
			require.NoError(t, err)
			require.Equal(t, uint64(2), count.GetCount())
			recent, err := eventsv1.NewEventsServiceClient(conn).Recent(ctx, &eventsv1.RecentRequest{Limit: 10})
			require.NoError(t, err)
			for _, e := range recent.GetEvents() {
				if e.GetMessageId() == "g1" {
					require.Contains(t, e.GetPropertiesJson(), "9007199254740993")
				}
			}
		})
	}
}

func TestGRPCIngestErrors(t *testing.T) {
	for _, engine := range testutil.Engines {
		t.Run(engine, func(t *testing.T) { testGRPCIngestErrors(t, engine) })
	}
}

func testGRPCIngestErrors(t *testing.T, engine string) {
	f := newFixture(t, engine, nil)
	conn, err := grpc.NewClient(f.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := ingestv1.NewIngestServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+f.tokenA)

	field := func(err error) string {
		for _, d := range status.Convert(err).Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				return br.GetFieldViolations()[0].GetField()
			}
		}
		return ""
	}
	_, err = client.Track(ctx, &ingestv1.TrackRequest{Event: "e"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, "userId", field(err))
	_, err = client.Track(ctx, &ingestv1.TrackRequest{Call: &ingestv1.Call{UserId: "u"}, Event: "e", PropertiesJson: "{not json"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	// A bad item is refused alone; the good one is stored.
	resp, err := client.Batch(ctx, &ingestv1.BatchRequest{Items: []*ingestv1.BatchItem{
		{Call: &ingestv1.BatchItem_Track{Track: &ingestv1.TrackRequest{Call: &ingestv1.Call{UserId: "u", MessageId: "good"}, Event: "ok"}}},
		{Call: &ingestv1.BatchItem_Track{Track: &ingestv1.TrackRequest{Call: &ingestv1.Call{UserId: "u"}}}},
	}})
	require.NoError(t, err)
	require.Equal(t, uint32(1), resp.GetAccepted())
	require.Len(t, resp.GetRejected(), 1)
	require.Equal(t, int32(1), resp.GetRejected()[0].GetIndex())
	require.Equal(t, "items[1].event", resp.GetRejected()[0].GetField())
	require.Equal(t, "invalid_request", resp.GetRejected()[0].GetCode())
	// A batch without a valid item is refused, naming the first.
	_, err = client.Batch(ctx, &ingestv1.BatchRequest{Items: []*ingestv1.BatchItem{
		{Call: &ingestv1.BatchItem_Track{Track: &ingestv1.TrackRequest{Call: &ingestv1.Call{UserId: "u"}}}},
	}})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, "items[0].event", field(err))

	_, readOnly, err := f.reg.CreateToken(t.Context(), "tenant-a", "reader", []authv1.Scope{authv1.Scope_SCOPE_READ})
	require.NoError(t, err)
	_, err = client.Track(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+readOnly),
		&ingestv1.TrackRequest{Call: &ingestv1.Call{UserId: "u"}, Event: "e"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "ingest needs the write scope")

	// A marker accepted after the refused calls: once it is stored, anything
	// the refused calls had let through would be too.
	_, err = client.Track(ctx, &ingestv1.TrackRequest{Call: &ingestv1.Call{UserId: "u", MessageId: "marker"}, Event: "marker"})
	require.NoError(t, err)
	f.waitStored(t, "tenant-a", 2)
	d, _ := f.stored(t, "tenant-a")
	require.Equal(t, uint64(2), d, "nothing from refused calls was stored: the marker and the good item")
}
