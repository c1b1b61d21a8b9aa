// The release of dts: the plugin, its extension and the applier share it.
#ifndef DTS_VERSION_H
#define DTS_VERSION_H

#define DTS_VERSION "0.4.0"

#endif
