/* A program that leaks a System V shared memory segment, for ipcaudit's call-site tests:
 * main -> setup_cache -> cache_init creates the segment, cache_attach maps it; the program
 * then prints what it made (one JSON line) and waits to be killed.
 *
 * Built by the tests with gcc -g and frame pointers, without them, and without frame pointers
 * and unwind tables. The marker comments name the lines the tests expect in the call sites.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <unistd.h>

__attribute__((noinline)) int cache_init(size_t size)
{
    int id = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600); /* @create */
    if (id < 0) {
        perror("shmget");
        exit(1);
    }
    return id;
}

__attribute__((noinline)) void *cache_attach(int id)
{
    void *p = shmat(id, NULL, 0); /* @attach */
    if (p == (void *)-1) {
        perror("shmat");
        exit(1);
    }
    return p;
}

__attribute__((noinline)) int setup_cache(size_t size, void **addr)
{
    int id = cache_init(size); /* @setup */
    *addr = cache_attach(id);
    return id;
}

int main(void)
{
    void *addr = NULL;
    int id = setup_cache(8192, &addr); /* @main */
    printf("{\"pid\": %d, \"shmid\": %d, \"addr\": \"%p\"}\n", getpid(), id, addr);
    fflush(stdout);
    for (;;) {
        pause();
    }
}
