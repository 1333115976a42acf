/* Collectives in a loop: MPI_Bcast of a seed from a rotating root, then MPI_Allreduce of a
 * value every rank derives from it, each checked against the sum computed locally.
 *
 *   collect ITERATIONS [DELAY_MS]
 *
 * Rank 0 prints "iter I sum S" after each iteration and, at the end, "PASS collect ITERATIONS
 * SIZE TOTAL" with the running total of all sums, which every rank checks against the closed
 * form. Any wrong value ends the job with "FAIL ..." and exit 1. */
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

static void fail(int rank, const char *what, long i, long got, long want)
{
    printf("FAIL collect rank %d %s at iteration %ld: %ld, expected %ld\n", rank, what, i, got, want);
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long iters = argc > 1 ? atol(argv[1]) : 100;
    long delay = argc > 2 ? atol(argv[2]) : 20;
    long total = 0, expect_total = 0;
    for (long i = 0; i < iters; i++) {
        int root = (int)(i % size);
        long seed = rank == root ? i * 1000 + 17 : -1;
        MPI_Bcast(&seed, 1, MPI_LONG, root, MPI_COMM_WORLD);
        if (seed != i * 1000 + 17)
            fail(rank, "bcast seed", i, seed, i * 1000 + 17);
        long mine = seed + rank, sum = 0;
        MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        long want = seed * size + (long)size * (size - 1) / 2;
        if (sum != want)
            fail(rank, "allreduce sum", i, sum, want);
        total += sum;
        expect_total += want;
        if (rank == 0) {
            printf("iter %ld sum %ld\n", i, sum);
            fflush(stdout);
            nap(delay);
        }
    }
    long n = iters, s = size;
    long closed = 1000 * s * n * (n - 1) / 2 + n * (17 * s + s * (s - 1) / 2);
    if (total != expect_total || total != closed)
        fail(rank, "total", iters, total, closed);
    if (rank == 0) {
        printf("PASS collect %ld %d %ld\n", iters, size, total);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
