/* `ferry-data`: the dataset tools (data_main) as a program of their own, so tests run them
 * without the ferry command line. Not installed. */
#include "config.h"

#include "loader/loader.h"

int main(int argc, char **argv)
{
	return data_main(argc, argv);
}
