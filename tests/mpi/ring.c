/* A token ring over MPI point-to-point messages that checks every value it receives.
 *
 *   ring ROUNDS [DELAY_MS]
 *
 * Rank 0 starts a token at 0; each rank checks the token against the value it must have
 * (round * size + rank), adds one and passes it on. Rank 0 prints "round R token T" after
 * each round and, at the end, "PASS ring ROUNDS SIZE TOKEN" with the final token, which must be
 * ROUNDS * SIZE. Any wrong value ends the job with "FAIL ..." and exit 1. DELAY_MS (default
 * 20) slows each round so the job can be checkpointed while it runs. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long rounds = argc > 1 ? atol(argv[1]) : 100;
    long delay = argc > 2 ? atol(argv[2]) : 20;
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    long token = 0;
    for (long r = 0; r < rounds; r++) {
        long want = r * size + rank;
        if (rank == 0) {
            if (r > 0) {
                MPI_Recv(&token, 1, MPI_LONG, prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                if (token != want) {
                    printf("FAIL ring rank %d round %ld: token %ld, expected %ld\n", rank, r, token, want);
                    fflush(stdout);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
                printf("round %ld token %ld\n", r, token);
                fflush(stdout);
            }
            nap(delay);
            token = want + 1;
            MPI_Send(&token, 1, MPI_LONG, next, 7, MPI_COMM_WORLD);
        } else {
            MPI_Recv(&token, 1, MPI_LONG, prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (token != want) {
                printf("FAIL ring rank %d round %ld: token %ld, expected %ld\n", rank, r, token, want);
                fflush(stdout);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            token = want + 1;
            MPI_Send(&token, 1, MPI_LONG, next, 7, MPI_COMM_WORLD);
        }
    }
    if (rank == 0) {
        MPI_Recv(&token, 1, MPI_LONG, prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (token != rounds * size) {
            printf("FAIL ring final token %ld, expected %ld\n", token, rounds * size);
            fflush(stdout);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        printf("PASS ring %ld %d %ld\n", rounds, size, token);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
